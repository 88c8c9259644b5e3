/**
 * Reading nftproxy's own tables back: from a table as the kernel lists it to the services it
 * dispatches, their schedulers, endpoints, shares and per-endpoint connection counters. The
 * engine behind `nftproxy status`; it knows the layout the compiler writes (names.ts).
 */
import { MAGLEV_TABLE_SIZES, type Scheduler } from '../api/types.js';
import type { Elem, Expr, Family } from '../nft/ir.js';
import { elemKey, type ElemCounter, type SetState, type TableState } from '../nft/ruleset.js';
import { compareIP, parseIP } from '../net/ip.js';
import {
  affinityChainName,
  type DispatchKind,
  LOCAL_SLOT_BASE,
  Maps,
  PRECREATED_PICK_SLOTS,
  type SchedulerName,
  Sets,
} from './names.js';

/** One endpoint of a pool, with its share of new connections and its counter. */
export interface EndpointView {
  address: string;
  port: number;
  /** Slots of the pool that point to it (its weight). */
  slots: number;
  /** Its share of new connections, 0..1 (slots / pool slots). */
  share: number;
  /**
   * New connections sent to it through this service address since its element was created
   * (the counter of its backends map elements: NAT sees the first packet of a connection
   * only). Absent when counters are off.
   */
  connections?: number;
}

/** The endpoints one pick chain draws from. */
export interface PoolView {
  /** As users name it (ProxyPolicy `scheduler.type`), read back from the pick chain. */
  scheduler: Scheduler;
  /** Slots drawn from (Maglev: the lookup table size). */
  slots: number;
  endpoints: EndpointView[];
}

/** One service address and port (or NodePort) as the table dispatches it. */
export interface ServiceView {
  family: Family;
  kind: DispatchKind;
  /** The service address; absent for NodePorts (every node address). */
  address?: string;
  protocol: string;
  port: number;
  /**
   * `endpoints`: dispatched; `reject`: no endpoints, refused; `drop`: endpoints elsewhere but
   * none usable from here (internalTrafficPolicy Local), dropped as Kubernetes asks.
   */
  state: 'endpoints' | 'reject' | 'drop';
  /** All usable endpoints (pods and the node itself use these). */
  cluster?: PoolView;
  /**
   * externalTrafficPolicy Local: what traffic from outside the cluster gets, this node's
   * endpoints, or `drop` when it has none.
   */
  local?: PoolView | 'drop';
  /** ClientIP affinity timeout in seconds. */
  affinitySeconds?: number;
  /** Source ranges apply (allow list or deny list). */
  sourceRanges?: boolean;
}

type Key = (string | number)[];

/** The values of a concatenated key, or the single value. */
function parts(e: Expr): Key | undefined {
  if (typeof e === 'string' || typeof e === 'number') return [e];
  if (e && typeof e === 'object' && 'concat' in e && Array.isArray(e.concat)) {
    const out: Key = [];
    for (const x of e.concat) {
      if (typeof x !== 'string' && typeof x !== 'number') return undefined;
      out.push(x);
    }
    return out;
  }
  return undefined;
}

/** The target of a `goto` verdict, `drop`, or undefined. */
function verdictOf(e: Expr): string | undefined {
  if (e && typeof e === 'object') {
    if ('goto' in e) return (e.goto as { target: string }).target;
    if ('jump' in e) return (e.jump as { target: string }).target;
    if ('drop' in e) return 'drop';
  }
  return undefined;
}

const mapEntries = (s: SetState | undefined): [Key, Expr, string][] =>
  [...(s?.elems.values() ?? [])].flatMap((e: Elem) => {
    if (!Array.isArray(e)) return [];
    const k = parts(e[0]);
    return k ? [[k, e[1], elemKey(e)] as [Key, Expr, string]] : [];
  });

/** `pick-random-3`, `nodeport-pick-hash-251-local` -> its parts. */
export function parsePickChainName(
  name: string,
): { kind: DispatchKind; scheduler: SchedulerName; slots: number; local: boolean } | undefined {
  const m = /^(nodeport-)?pick-(random|inc|hash)-(\d+)(-local)?$/.exec(name);
  if (!m) return undefined;
  return {
    kind: m[1] ? 'nodeport' : 'service',
    scheduler: m[2] as SchedulerName,
    slots: Number(m[3]),
    local: Boolean(m[4]),
  };
}

/** What a user calls the scheduler of a pool with these slots. */
function schedulerView(s: SchedulerName, slots: number, distinct: number): Scheduler {
  if (s === 'inc') return 'roundRobin';
  if (s === 'hash')
    return (MAGLEV_TABLE_SIZES as readonly number[]).includes(slots) && slots > PRECREATED_PICK_SLOTS
      ? 'maglev'
      : 'sourceHash';
  return slots > distinct ? 'weighted' : 'random';
}

/**
 * The services one of our tables dispatches, sorted by address (NodePorts last), protocol
 * and port.
 */
export function inspectTable(t: TableState): ServiceView[] {
  const family = t.table.family;
  const out: ServiceView[] = [];
  for (const kind of ['service', 'nodeport'] as const) {
    const svc = kind === 'service';
    const get = (name: string) => t.sets.get(name);
    const backends = get(svc ? Maps.backends : Maps.nodeportBackends);
    // Slots by dispatch key (address . proto . port, or proto . port).
    const slotsOf = new Map<string, { slot: number; addr: string; port: number; counter?: ElemCounter }[]>();
    for (const [k, data, ek] of mapEntries(backends)) {
      const d = parts(data);
      if (!d || d.length !== 2) continue;
      const slot = Number(k[k.length - 1]);
      const dk = JSON.stringify(k.slice(0, -1));
      const counter = backends?.counters?.get(ek);
      let list = slotsOf.get(dk);
      if (!list) slotsOf.set(dk, (list = []));
      list.push({ slot, addr: String(d[0]), port: Number(d[1]), ...(counter ? { counter } : {}) });
    }
    const pool = (dk: string, chain: string): PoolView | undefined => {
      const pick = parsePickChainName(chain);
      if (!pick) return undefined;
      const base = pick.local ? LOCAL_SLOT_BASE : 0;
      const used = (slotsOf.get(dk) ?? []).filter((s) => s.slot >= base && s.slot < base + pick.slots);
      const byEndpoint = new Map<string, EndpointView>();
      for (const s of used) {
        const ek = `${s.addr}|${s.port}`;
        let ep = byEndpoint.get(ek);
        if (!ep) byEndpoint.set(ek, (ep = { address: s.addr, port: s.port, slots: 0, share: 0 }));
        ep.slots++;
        if (s.counter) ep.connections = (ep.connections ?? 0) + s.counter.packets;
      }
      const endpoints = [...byEndpoint.values()].sort(
        (a, b) => compareIP(parseIP(a.address)!, parseIP(b.address)!) || a.port - b.port,
      );
      for (const ep of endpoints) ep.share = ep.slots / pick.slots;
      return {
        scheduler: schedulerView(pick.scheduler, pick.slots, endpoints.length),
        slots: pick.slots,
        endpoints,
      };
    };
    const views = new Map<string, ServiceView>();
    const view = (k: Key): ServiceView => {
      const dk = JSON.stringify(k);
      let v = views.get(dk);
      if (!v) {
        const [a, p, port] = svc ? k : [undefined, ...k];
        v = {
          family,
          kind,
          ...(a !== undefined ? { address: String(a) } : {}),
          protocol: String(p),
          port: Number(port),
          state: 'endpoints',
        };
        views.set(dk, v);
      }
      return v;
    };
    for (const [k, data] of mapEntries(get(svc ? Maps.serviceIPs : Maps.serviceNodeports))) {
      const p = pool(JSON.stringify(k), verdictOf(data) ?? '');
      if (p) view(k).cluster = p;
    }
    for (const [k, data] of mapEntries(get(svc ? Maps.noEndpointServices : Maps.noEndpointNodeports)))
      view(k).state = verdictOf(data) === 'drop' ? 'drop' : 'reject';
    for (const [k, data] of mapEntries(get(svc ? Maps.localServiceIPs : Maps.localServiceNodeports))) {
      const target = verdictOf(data);
      const p = target === 'drop' ? 'drop' : pool(JSON.stringify(k), target ?? '');
      if (p) view(k).local = p;
    }
    for (const [k, data] of mapEntries(get(svc ? Maps.affinityTimeouts : Maps.affinityNodeportTimeouts))) {
      const m = /^affinity-(\d+)$/.exec(verdictOf(data) ?? '');
      if (m && verdictOf(data) === affinityChainName(Number(m[1]))) view(k).affinitySeconds = Number(m[1]);
    }
    for (const e of get(svc ? Sets.firewallServices : Sets.firewallNodeports)?.elems.values() ?? []) {
      const k = parts(e as Expr);
      if (k) view(k).sourceRanges = true;
    }
    out.push(
      ...[...views.values()].sort(
        (a, b) =>
          (a.address && b.address ? compareIP(parseIP(a.address)!, parseIP(b.address)!) : 0) ||
          a.protocol.localeCompare(b.protocol) ||
          a.port - b.port,
      ),
    );
  }
  return out;
}
