/**
 * Stale conntrack entries. A UDP (or SCTP) "connection" is a conntrack entry that lives as
 * long as packets keep coming, and its DNAT target is fixed in it. When that endpoint goes,
 * the client keeps sending into the void until the entry is deleted; then the next datagram
 * is a new flow and reaches a live endpoint. Likewise, datagrams sent to a service address
 * before it had a rule hold an untranslated entry that must go once the rule exists.
 *
 * Only the flows of what changed are deleted, never the whole table, not even on restart:
 * flows of a removed endpoint (matched by its address and port), and untranslated flows of
 * an address that just became active (their reply comes from the address itself, which a
 * translated flow's never does).
 */
import { execa } from 'execa';
import type { Elem, Expr } from '../nft/ir.js';
import { elemKey, irEqual, type Ruleset, type TableState, tableKey } from '../nft/ruleset.js';
import type { RulesetDelta } from '../nft/diff.js';
import { silentLogger, type Logger } from '../telemetry/log.js';
import { FAMILIES, Maps, TABLE } from '../proxy/names.js';

/** A filter for `conntrack -D`: flows matching all given fields. */
export interface StaleFlow {
  family: 'ipv4' | 'ipv6';
  protocol: 'udp' | 'sctp';
  /** Original destination (the service address); absent for NodePorts. */
  origDst?: string;
  origDstPort: number;
  /** Reply source: the endpoint a flow was translated to, or the service address itself for untranslated flows. */
  replySrc?: string;
  /** Reply source port: the endpoint's port, or the NodePort itself for untranslated flows. */
  replyPortSrc?: number;
}

/** One element change in one of our tables. */
export interface SetChange {
  table: string;
  set: string;
  before?: Elem;
  after?: Elem;
}

const CONNLESS = new Set(['udp', 'sctp']);
const WATCHED = new Set<string>([
  Maps.backends,
  Maps.nodeportBackends,
  Maps.serviceIPs,
  Maps.serviceNodeports,
]);

/** The changes a builder delta records, in the sets that matter here. */
export function changesOfDelta(delta: RulesetDelta): SetChange[] {
  const out: SetChange[] = [];
  for (const [table, sets] of delta.elements) {
    for (const [set, changes] of sets) {
      if (!WATCHED.has(set)) continue;
      for (const c of changes.values()) out.push({ table, set, ...c });
    }
  }
  return out;
}

/** The changes between what the kernel had and what is wanted now, in the sets that matter here. */
export function changesBetween(before: Ruleset, after: Ruleset): SetChange[] {
  const out: SetChange[] = [];
  for (const family of FAMILIES) {
    const table = tableKey(family, TABLE);
    const b = before.tables.get(table);
    const a = after.tables.get(table);
    if (!a) continue;
    // Without a table before (first start, after cleanup, a deleted table), every service
    // address is newly active: its untranslated flows are stale, and only those.
    for (const set of WATCHED) {
      const bs = b?.sets.get(set)?.elems ?? new Map<string, Elem>();
      const as = a.sets.get(set)?.elems ?? new Map<string, Elem>();
      for (const [k, e] of bs) if (!as.has(k)) out.push({ table, set, before: e });
      for (const [k, e] of as) {
        const old = bs.get(k);
        if (old === undefined) out.push({ table, set, after: e });
        else if (!irEqual(old, e)) out.push({ table, set, before: old, after: e });
      }
    }
  }
  return out;
}

const parts = (e: Expr): Expr[] => (typeof e === 'object' && e !== null && 'concat' in e ? e.concat : [e]);

/** Whether `ip` . `port` is still a backend, in any slot, of the backends key prefix. */
function stillBackend(
  t: TableState | undefined,
  set: string,
  prefix: Expr[],
  ip: string,
  port: number,
): boolean {
  const elems = t?.sets.get(set)?.elems;
  if (!elems) return false;
  for (let slot = 0; ; slot++) {
    const e = elems.get(elemKey({ concat: [...prefix, slot] }));
    if (!e || !Array.isArray(e)) return false;
    const [eip, eport] = parts(e[1]);
    if (eip === ip && eport === port) return true;
  }
}

/** The flows to delete after these changes were applied, `current` being the ruleset now. */
export function staleFlows(changes: SetChange[], current: Ruleset): StaleFlow[] {
  const out = new Map<string, StaleFlow>();
  const add = (f: StaleFlow) => out.set(JSON.stringify(f), f);
  for (const c of changes) {
    const family = c.table.startsWith('ip6 ') ? 'ipv6' : 'ipv4';
    const isService = c.set === Maps.backends || c.set === Maps.serviceIPs;
    if ((c.set === Maps.backends || c.set === Maps.nodeportBackends) && Array.isArray(c.before)) {
      // A backend slot went or changed: if that endpoint is in no slot any more, its flows go.
      const key = parts(c.before[0]);
      const [ep, epPort] = parts(c.before[1]) as [string, number];
      const protocol = key[isService ? 1 : 0] as string;
      const prefix = key.slice(0, -1);
      if (!CONNLESS.has(protocol) || stillBackend(current.tables.get(c.table), c.set, prefix, ep, epPort))
        continue;
      const origDst = isService ? { origDst: key[0] as string } : {};
      const port = prefix[prefix.length - 1] as number;
      add({
        family,
        protocol: protocol as StaleFlow['protocol'],
        ...origDst,
        origDstPort: port,
        replySrc: ep,
        replyPortSrc: epPort,
      });
    } else if (
      (c.set === Maps.serviceIPs || c.set === Maps.serviceNodeports) &&
      c.before === undefined &&
      Array.isArray(c.after)
    ) {
      // An address became active: its untranslated flows (replies from itself) go.
      const key = parts(c.after[0]);
      const protocol = key[isService ? 1 : 0] as string;
      if (!CONNLESS.has(protocol)) continue;
      const port = key[isService ? 2 : 1] as number;
      const untranslated = isService
        ? { origDst: key[0] as string, replySrc: key[0] as string }
        : { replyPortSrc: port };
      add({ family, protocol: protocol as StaleFlow['protocol'], origDstPort: port, ...untranslated });
    }
  }
  return [...out.values()];
}

/** Deletes conntrack flows with the conntrack tool. */
export class ConntrackCleaner {
  private readonly command: string[];
  private readonly log: Logger;

  /** `command`: how to run conntrack, default `['conntrack']` (tests prefix `ip netns exec NS`). */
  constructor(opts: { command?: string[]; log?: Logger } = {}) {
    this.command = opts.command ?? ['conntrack'];
    this.log = opts.log ?? silentLogger;
  }

  /**
   * Deletes each flow filter's entries, a few conntrack processes at a time; returns how
   * many filters failed. Never throws.
   */
  async clear(flows: StaleFlow[]): Promise<{ failed: number }> {
    let failed = 0;
    const [file, ...pre] = this.command;
    const queue = [...flows];
    const worker = async () => {
      for (let f = queue.shift(); f; f = queue.shift()) {
        const args = [...pre, '-D', '-f', f.family, '-p', f.protocol];
        if (f.origDst) args.push('--orig-dst', f.origDst);
        args.push('--orig-port-dst', String(f.origDstPort));
        if (f.replySrc) args.push('--reply-src', f.replySrc);
        if (f.replyPortSrc !== undefined) args.push('--reply-port-src', String(f.replyPortSrc));
        const r = await execa(file!, args, { reject: false, timeout: 10_000 });
        // Exit 1 with "0 flow entries have been deleted" is not a failure.
        if (r.exitCode !== 0 && !/0 flow entries/.test(String(r.stderr))) {
          failed++;
          this.log.warn('deleting stale conntrack entries failed', {
            flow: f,
            stderr: String(r.stderr).trim(),
          });
        } else {
          this.log.debug('deleted stale conntrack entries', { flow: f, result: String(r.stderr).trim() });
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(8, flows.length) }, worker));
    return { failed };
  }
}

/** One direction's addresses and ports of a conntrack flow. */
export interface FlowTuple {
  src: string;
  dst: string;
  sport?: number;
  dport?: number;
}

/** A conntrack flow as `conntrack -L -o extended` lists it. */
export interface Flow {
  family: 'ipv4' | 'ipv6';
  protocol: string;
  /** Seconds until it expires. */
  timeout: number;
  /** TCP and SCTP state, e.g. ESTABLISHED. */
  state?: string;
  /** As the client sent it: to the service address (or NodePort). */
  original: FlowTuple;
  /** As the reply comes: from the endpoint DNAT chose. */
  reply: FlowTuple;
  /** `ASSURED`, `UNREPLIED`. */
  flags: string[];
}

/** Parses `conntrack -L -o extended` output; lines it cannot read are skipped. */
export function parseFlows(text: string): Flow[] {
  const out: Flow[] = [];
  for (const line of text.split('\n')) {
    const tok = line.trim().split(/\s+/);
    if (tok[0] !== 'ipv4' && tok[0] !== 'ipv6') continue;
    const tuples: Partial<Record<keyof FlowTuple, string>>[] = [{}, {}];
    const flags: string[] = [];
    let state: string | undefined;
    for (const t of tok.slice(5)) {
      const m = /^(src|dst|sport|dport)=(.+)$/.exec(t);
      if (m) {
        const k = m[1] as keyof FlowTuple;
        (tuples[0]![k] === undefined ? tuples[0]! : tuples[1]!)[k] = m[2]!;
      } else if (/^\[[A-Z]+\]$/.test(t)) flags.push(t.slice(1, -1));
      else if (/^[A-Z_]+$/.test(t) && tuples[0]!.src === undefined) state = t;
    }
    const tuple = (x: Partial<Record<keyof FlowTuple, string>>): FlowTuple | undefined =>
      x.src && x.dst
        ? {
            src: x.src,
            dst: x.dst,
            ...(x.sport ? { sport: Number(x.sport) } : {}),
            ...(x.dport ? { dport: Number(x.dport) } : {}),
          }
        : undefined;
    const original = tuple(tuples[0]!);
    const reply = tuple(tuples[1]!);
    if (!original || !reply) continue;
    out.push({
      family: tok[0],
      protocol: tok[2]!,
      timeout: Number(tok[4]),
      ...(state ? { state } : {}),
      original,
      reply,
      flags,
    });
  }
  return out;
}

/** Which flows to list: all given fields must match. */
export interface FlowFilter {
  family?: 'ipv4' | 'ipv6';
  protocol?: string;
  origDst?: string;
  origDstPort?: number;
}

/** Lists conntrack flows with the conntrack tool (`command`: how to run it). */
export async function listFlows(command: string[], filter: FlowFilter = {}): Promise<Flow[]> {
  const [file, ...pre] = command;
  const args = [...pre, '-L', '-o', 'extended'];
  if (filter.family) args.push('-f', filter.family);
  if (filter.protocol) args.push('-p', filter.protocol);
  if (filter.origDst) args.push('--orig-dst', filter.origDst);
  if (filter.origDstPort !== undefined) args.push('--orig-port-dst', String(filter.origDstPort));
  const r = await execa(file!, args, { maxBuffer: 1 << 30, timeout: 60_000 });
  return parseFlows(r.stdout);
}
