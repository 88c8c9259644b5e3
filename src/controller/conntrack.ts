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
import { silentLogger, type Logger } from '../telemetry/log.js';
import { type DispatchUnit, unitEndpoints } from '../proxy/service.js';

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

/**
 * What a service address (or NodePort) forwards to, as far as stale flows are concerned: its
 * endpoints and whether new flows are translated at all.
 */
export interface PortState {
  family: 'ipv4' | 'ipv6';
  protocol: string;
  /** The service address; absent for NodePorts. */
  address?: string;
  port: number;
  /** `ip|port` of every endpoint in any of its slots (both pools). */
  endpoints: Set<string>;
  /** Whether it has a dispatch entry (new flows are translated to an endpoint). */
  forwarding: boolean;
}

/** Before and after of one address; absent: not programmed. */
export interface PortChange {
  before?: PortState;
  after?: PortState;
}

const CONNLESS = new Set(['udp', 'sctp']);

/** The port state of a programmed dispatch unit. */
export function portStateOf(u: DispatchUnit): PortState {
  const e = u;
  const endpoints = unitEndpoints(u);
  return {
    family: e.family === 'ip6' ? 'ipv6' : 'ipv4',
    protocol: e.protocol,
    ...(e.address !== undefined ? { address: e.address } : {}),
    port: e.port,
    endpoints,
    forwarding: e.verdict === 'forward',
  };
}

/**
 * The flows to delete after a change of what addresses forward to: for each UDP or SCTP
 * address, the flows translated to an endpoint it no longer has, and, when it just started
 * forwarding, its untranslated flows.
 */
export function staleFlows(changes: Iterable<PortChange>): StaleFlow[] {
  const out = new Map<string, StaleFlow>();
  const add = (f: StaleFlow) => out.set(JSON.stringify(f), f);
  for (const { before, after } of changes) {
    const p = after ?? before!;
    if (!CONNLESS.has(p.protocol)) continue;
    const protocol = p.protocol as StaleFlow['protocol'];
    for (const ep of before?.endpoints ?? []) {
      if (after?.endpoints.has(ep)) continue;
      const bar = ep.lastIndexOf('|');
      add({
        family: p.family,
        protocol,
        ...(p.address !== undefined ? { origDst: p.address } : {}),
        origDstPort: p.port,
        replySrc: ep.slice(0, bar),
        replyPortSrc: Number(ep.slice(bar + 1)),
      });
    }
    if (after?.forwarding && !before?.forwarding) {
      // Untranslated flows: their reply comes from the address (or port) itself.
      const untranslated =
        p.address !== undefined ? { origDst: p.address, replySrc: p.address } : { replyPortSrc: p.port };
      add({ family: p.family, protocol, origDstPort: p.port, ...untranslated });
    }
  }
  return [...out.values()];
}

/** The port changes of a builder delta's entry changes (UDP and SCTP only). */
export function portChangesOfDelta(
  changes: Iterable<{ before?: DispatchUnit; after?: DispatchUnit }>,
): PortChange[] {
  const out: PortChange[] = [];
  for (const { before, after } of changes) {
    if (!CONNLESS.has((before ?? after)!.protocol)) continue;
    out.push({
      ...(before ? { before: portStateOf(before) } : {}),
      ...(after ? { after: portStateOf(after) } : {}),
    });
  }
  return out;
}

/**
 * The stale flows among those conntrack holds, against the programmed entries (a full sync,
 * when what the kernel forwarded before is not known): UDP and SCTP flows to an address we
 * program that were translated to an endpoint it no longer has, or that were not translated
 * although it forwards now. Flows to addresses we do not program are left alone.
 */
export function staleFlowsInTable(flows: Iterable<Flow>, units: Iterable<DispatchUnit>): StaleFlow[] {
  const states = new Map<string, PortState>();
  for (const u of units) {
    if (!CONNLESS.has(u.protocol)) continue;
    const st = portStateOf(u);
    states.set(`${st.family} ${st.protocol} ${st.address ?? '*'} ${st.port}`, st);
  }
  const out = new Map<string, StaleFlow>();
  for (const f of flows) {
    if (!CONNLESS.has(f.protocol) || f.original.dport === undefined) continue;
    const port = f.original.dport;
    const vip = states.get(`${f.family} ${f.protocol} ${f.original.dst} ${port}`);
    const st = vip ?? states.get(`${f.family} ${f.protocol} * ${port}`);
    if (!st) continue;
    const protocol = f.protocol as StaleFlow['protocol'];
    const untranslated = f.reply.src === f.original.dst;
    let stale: StaleFlow | undefined;
    if (untranslated) {
      if (st.forwarding)
        stale = vip
          ? {
              family: f.family,
              protocol,
              origDst: f.original.dst,
              origDstPort: port,
              replySrc: f.original.dst,
            }
          : { family: f.family, protocol, origDstPort: port, replyPortSrc: port };
    } else if (f.reply.sport !== undefined && !st.endpoints.has(`${f.reply.src}|${f.reply.sport}`)) {
      stale = {
        family: f.family,
        protocol,
        ...(vip ? { origDst: f.original.dst } : {}),
        origDstPort: port,
        replySrc: f.reply.src,
        replyPortSrc: f.reply.sport,
      };
    }
    if (stale) out.set(JSON.stringify(stale), stale);
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

  /** The UDP and SCTP flows conntrack holds, both families. */
  async list(): Promise<Flow[]> {
    const out: Flow[] = [];
    for (const family of ['ipv4', 'ipv6'] as const)
      for (const protocol of ['udp', 'sctp'])
        out.push(...(await listFlows(this.command, { family, protocol })));
    return out;
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
