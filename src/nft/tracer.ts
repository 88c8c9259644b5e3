/**
 * A packet tracer over the IR: walks a new connection's first packet through the netfilter
 * hooks the way the kernel would, evaluating every base chain of the matching family in
 * priority order, and reports each possible outcome (DNAT target, masquerade, accept, drop,
 * reject) with the path of chains and maps it took.
 *
 * Random choices fork: `numgen ... mod N` yields N outcomes, so the endpoints a packet "can
 * reach" are exactly the DNAT targets over all outcomes. It runs on a compiled ruleset or on
 * one read back from the kernel, which is how `nftproxy explain` answers "which pod gets my
 * packet?".
 */
import type { Chain, Elem, Expr, Family, Stmt } from './ir.js';
import { elemKeyExpr, exprKey, irEqual, type Ruleset, type SetState, type TableState } from './ruleset.js';
import { renderExpr, renderStmt } from './render.js';
import { cidrContains, compareIP, formatHostPort, parseCIDR, parseIP, canonicalIP } from '../net/ip.js';

/** Where the packet comes from. `pod` and `external` enter through prerouting; `host` is locally generated. */
export type Entry = 'pod' | 'external' | 'host';

/** L4 protocols the tracer understands. */
export type TraceProtocol = 'tcp' | 'udp' | 'sctp';

/** The first packet of a new connection. */
export interface TracePacket {
  saddr: string;
  daddr: string;
  protocol: TraceProtocol;
  dport: number;
  /** Default 40000. */
  sport?: number;
  entry: Entry;
  /** The interface it arrives on (`meta iifname`); none from the node itself. */
  iifname?: string;
}

/** Node facts the kernel would know. */
export interface TraceFacts {
  /** Addresses of the node itself: `fib daddr type local` and local delivery. */
  localAddresses: string[];
}

/** One possible fate of the packet. */
export interface TraceOutcome {
  verdict: 'accept' | 'drop' | 'reject';
  /** For reject: `tcp reset`, `icmp port-unreachable`, ... */
  reject?: string;
  /** The destination after DNAT, when DNAT happened. */
  dnat?: { addr: string; port: number };
  masquerade: boolean;
  /** For accepted packets: delivered to the node itself, or routed onwards. */
  delivery?: 'local' | 'forward';
  /** What happened, step by step. */
  steps: TraceStep[];
  /** The steps as text, one line each. */
  path: string[];
}

/** What a rule did to the packet. */
export type RuleEffect = 'verdictMap' | 'mark' | 'dnat' | 'masquerade' | 'reject' | 'affinity' | 'verdict';

/** One step of a packet's way through the ruleset, with the line `explain` prints for it. */
export type TraceStep =
  /** A base chain of a hook is entered. */
  | { kind: 'hook'; hook: string; chain: string; text: string }
  /** The routing decision between the hooks. */
  | { kind: 'route'; delivery: 'local' | 'forward'; text: string }
  /** A rule acted on the packet (rules that only matched leave no step). */
  | {
      kind: 'rule';
      chain: string;
      /** Its index in the chain. */
      rule: number;
      /** The sets and maps the rule refers to (`@name`), in order. */
      sets: string[];
      effect: RuleEffect;
      text: string;
    };

/** Every possible outcome, and a summary. */
export interface TraceResult {
  packet: TracePacket;
  outcomes: TraceOutcome[];
  /** Distinct DNAT targets of accepted outcomes, `ip:port` (IPv6 as `[ip]:port`), sorted. */
  endpoints: string[];
}

type Value = string | number | Value[] | string[] | VerdictValue;
interface VerdictValue {
  verdict: 'accept' | 'drop' | 'return' | 'continue' | 'jump' | 'goto';
  target?: string;
}

interface PacketState {
  family: Family;
  saddr: string;
  daddr: string;
  protocol: TraceProtocol;
  sport: number;
  dport: number;
  /** The destination before any DNAT (`ct original ... daddr`, `ct original proto-dst`). */
  origDaddr: string;
  origDport: number;
  mark: number;
  ctStatus: string[];
  /** '' for packets of the node itself, as in the kernel's output hook. */
  iifname: string;
  dnat?: { addr: string; port: number };
  masquerade: boolean;
  steps: TraceStep[];
}

/** How a chain (or rule) ended for one branch. */
type Flow =
  | { kind: 'next' } // go on with the next statement (or rule)
  | { kind: 'miss' } // a statement did not match: the rule ends, the chain goes on
  | { kind: 'return' } // return to the caller
  | { kind: 'accept' }
  | { kind: 'drop' }
  | { kind: 'reject'; type: string };

interface Branch {
  pkt: PacketState;
  flow: Flow;
}

const HOOKS_INGRESS = ['prerouting'] as const;
/** Thrown while evaluating an expression that cannot match this packet (e.g. `tcp dport` on UDP). */
const NO_MATCH = Symbol('no match');
const MAX_DEPTH = 32;

/** The rule a statement belongs to, for the steps it makes. */
interface RuleAt {
  chain: string;
  rule: number;
  sets: string[];
  text: string;
}

/** The sets and maps a rule refers to (`@name`), in order of appearance. */
function setRefs(rule: Stmt[]): string[] {
  const out: string[] = [];
  const walk = (v: unknown): void => {
    if (typeof v === 'string') {
      if (v.startsWith('@') && !out.includes(v.slice(1))) out.push(v.slice(1));
    } else if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === 'object') Object.values(v).forEach(walk);
  };
  walk(rule);
  return out;
}

function clone(p: PacketState): PacketState {
  return { ...p, ctStatus: [...p.ctStatus], steps: [...p.steps], ...(p.dnat ? { dnat: { ...p.dnat } } : {}) };
}

/** Converts a runtime value to the expression form set elements use, for exact lookups. */
function valueToExpr(v: Value): Expr {
  if (Array.isArray(v)) return { concat: v.map((x) => valueToExpr(x as Value)) };
  if (typeof v === 'object') throw new Error('verdict is not a key');
  return v;
}

function valueText(v: Value): string {
  if (Array.isArray(v)) return v.map((x) => valueText(x as Value)).join(' . ');
  if (typeof v === 'object') return v.target ? `${v.verdict} ${v.target}` : v.verdict;
  return String(v);
}

/** Whether a single (non-concat) value matches a single element field. */
function fieldMatches(v: Value, e: Expr): boolean {
  if (typeof e === 'string' || typeof e === 'number') {
    if (typeof v === 'string' && typeof e === 'string' && v.includes(':') !== e.includes(':')) return false;
    return (
      v === e ||
      (typeof v === 'string' &&
        typeof e === 'string' &&
        canonicalIP(v) !== undefined &&
        canonicalIP(v) === canonicalIP(e))
    );
  }
  if ('prefix' in e) {
    const c = parseCIDR(`${e.prefix.addr}/${e.prefix.len}`);
    const ip = typeof v === 'string' ? parseIP(v) : undefined;
    return !!c && !!ip && cidrContains(c, ip);
  }
  if ('range' in e) {
    const [lo, hi] = e.range;
    if (typeof v === 'number' && typeof lo === 'number' && typeof hi === 'number') return v >= lo && v <= hi;
    const ip = typeof v === 'string' ? parseIP(v) : undefined;
    const l = typeof lo === 'string' ? parseIP(lo) : undefined;
    const h = typeof hi === 'string' ? parseIP(hi) : undefined;
    return !!ip && !!l && !!h && compareIP(ip, l) >= 0 && compareIP(ip, h) <= 0;
  }
  return false;
}

function elemMatches(v: Value, key: Expr): boolean {
  if (typeof key === 'object' && key !== null && 'concat' in key) {
    if (!Array.isArray(v) || v.length !== key.concat.length) return false;
    return key.concat.every((k, i) => fieldMatches(v[i] as Value, k));
  }
  return fieldMatches(v, key);
}

/** Finds the element of a set or map matching a value. */
function lookup(s: SetState, v: Value): Elem | undefined {
  if (!s.def.flags?.includes('interval')) {
    try {
      const exact = s.elems.get(exprKey(valueToExpr(v)));
      if (exact !== undefined) return exact;
    } catch {
      return undefined;
    }
    // Non-canonical spellings (e.g. an IPv6 address written long) fall through to a scan.
  }
  for (const e of s.elems.values()) if (elemMatches(v, elemKeyExpr(e))) return e;
  return undefined;
}

function exprToValue(e: Expr): Value {
  if (typeof e === 'string' || typeof e === 'number') return e;
  if ('concat' in e) return e.concat.map(exprToValue) as Value[];
  if ('jump' in e) return { verdict: 'jump', target: e.jump.target };
  if ('goto' in e) return { verdict: 'goto', target: e.goto.target };
  if ('accept' in e) return { verdict: 'accept' };
  if ('drop' in e) return { verdict: 'drop' };
  if ('return' in e) return { verdict: 'return' };
  if ('continue' in e) return { verdict: 'continue' };
  throw new Error(`unsupported element data ${JSON.stringify(e)}`);
}

/** Traces packets through one ruleset. */
export class Tracer {
  private readonly local: Set<string>;

  constructor(
    private readonly ruleset: Ruleset,
    facts: TraceFacts,
  ) {
    this.local = new Set(facts.localAddresses.map((a) => canonicalIP(a) ?? a));
  }

  /** Every possible outcome of the packet. */
  trace(packet: TracePacket): TraceResult {
    const saddr = canonicalIP(packet.saddr);
    const daddr = canonicalIP(packet.daddr);
    if (!saddr || !daddr) throw new Error(`not an IP address: ${!saddr ? packet.saddr : packet.daddr}`);
    const v6 = daddr.includes(':');
    if (saddr.includes(':') !== v6) throw new Error('source and destination are of different IP versions');
    const start: PacketState = {
      family: v6 ? 'ip6' : 'ip',
      saddr,
      daddr,
      protocol: packet.protocol,
      sport: packet.sport ?? 40000,
      dport: packet.dport,
      origDaddr: daddr,
      origDport: packet.dport,
      mark: 0,
      ctStatus: [],
      iifname: packet.entry === 'host' ? '' : (packet.iifname ?? ''),
      masquerade: false,
      steps: [],
    };
    const outcomes: TraceOutcome[] = [];
    for (const b of this.walkHooks(start, packet.entry)) {
      const { pkt, flow } = b;
      const o: TraceOutcome = {
        verdict: flow.kind === 'drop' ? 'drop' : flow.kind === 'reject' ? 'reject' : 'accept',
        masquerade: pkt.masquerade,
        steps: pkt.steps,
        path: pkt.steps.map((st) => st.text),
      };
      if (flow.kind === 'reject') o.reject = flow.type;
      if (pkt.dnat) o.dnat = pkt.dnat;
      if (o.verdict === 'accept') o.delivery = this.local.has(pkt.daddr) ? 'local' : 'forward';
      outcomes.push(o);
    }
    const endpoints = [
      ...new Set(
        outcomes
          .filter((o) => o.verdict === 'accept' && o.dnat)
          .map((o) => formatHostPort(o.dnat!.addr, o.dnat!.port)),
      ),
    ].sort();
    return { packet, outcomes, endpoints };
  }

  /** The hooks a packet traverses, in order, re-routing after DNAT as the kernel does. */
  private walkHooks(start: PacketState, entry: Entry): Branch[] {
    const first = entry === 'host' ? ['output'] : [...HOOKS_INGRESS];
    let branches: Branch[] = [{ pkt: start, flow: { kind: 'accept' } }];
    for (const hook of first) branches = this.runHookAll(branches, hook);
    const done: Branch[] = [];
    for (const b of branches) {
      if (b.flow.kind !== 'accept') {
        done.push(b);
        continue;
      }
      const isLocal = this.local.has(b.pkt.daddr);
      const rest =
        entry === 'host'
          ? isLocal
            ? ['postrouting', 'input']
            : ['postrouting']
          : isLocal
            ? ['input']
            : ['forward', 'postrouting'];
      b.pkt.steps.push({
        kind: 'route',
        delivery: isLocal ? 'local' : 'forward',
        text: `route: ${isLocal ? 'local delivery' : 'forward'} to ${b.pkt.daddr}`,
      });
      let bs: Branch[] = [b];
      for (const hook of rest) bs = this.runHookAll(bs, hook);
      done.push(...bs);
    }
    return done;
  }

  private runHookAll(branches: Branch[], hook: string): Branch[] {
    return branches.flatMap((b) => (b.flow.kind === 'accept' ? this.runHook(b.pkt, hook) : [b]));
  }

  private baseChains(family: Family, hook: string): { table: TableState; chain: Chain }[] {
    const out: { table: TableState; chain: Chain }[] = [];
    for (const t of this.ruleset.tables.values()) {
      if (t.table.family !== family) continue;
      for (const c of t.chains.values()) if (c.chain.hook === hook) out.push({ table: t, chain: c.chain });
    }
    return out.sort((a, b) => (a.chain.prio ?? 0) - (b.chain.prio ?? 0));
  }

  private runHook(pkt: PacketState, hook: string): Branch[] {
    let branches: Branch[] = [{ pkt, flow: { kind: 'accept' } }];
    for (const { table, chain } of this.baseChains(pkt.family, hook)) {
      branches = branches.flatMap((b) => {
        if (b.flow.kind !== 'accept') return [b];
        // Only the first NAT binding of a connection counts: a later nat chain on the same
        // hook is skipped once the packet was translated.
        if (
          chain.type === 'nat' &&
          (hook === 'prerouting' || hook === 'output' ? b.pkt.dnat : b.pkt.masquerade)
        )
          return [b];
        const p = clone(b.pkt);
        p.steps.push({
          kind: 'hook',
          hook,
          chain: chain.name,
          text: `${hook}: chain ${chain.name} (${chain.type} priority ${chain.prio ?? 0})`,
        });
        return this.runChain(table, chain.name, p, 0).map((r): Branch => {
          if (r.flow.kind === 'next' || r.flow.kind === 'return') {
            const policy = chain.policy ?? 'accept';
            return { pkt: r.pkt, flow: policy === 'drop' ? { kind: 'drop' } : { kind: 'accept' } };
          }
          return r;
        });
      });
    }
    return branches;
  }

  /** Runs a chain; `next` means it fell off the end. */
  private runChain(table: TableState, name: string, pkt: PacketState, depth: number): Branch[] {
    if (depth > MAX_DEPTH) throw new Error(`chain recursion deeper than ${MAX_DEPTH} at ${name}`);
    const chain = table.chains.get(name);
    if (!chain) throw new Error(`jump to missing chain ${name}`);
    let live: PacketState[] = [pkt];
    const finished: Branch[] = [];
    for (const [i, rule] of chain.rules.entries()) {
      const next: PacketState[] = [];
      for (const p of live) {
        for (const r of this.runRule(table, name, i, rule, p, depth)) {
          if (r.flow.kind === 'next') next.push(r.pkt);
          else finished.push(r);
        }
      }
      live = next;
      if (!live.length) break;
    }
    return [...finished, ...live.map((p): Branch => ({ pkt: p, flow: { kind: 'next' } }))];
  }

  /** Applies a verdict reached in chain `from`. */
  private verdict(table: TableState, v: VerdictValue, pkt: PacketState, depth: number): Branch[] {
    switch (v.verdict) {
      case 'accept':
        return [{ pkt, flow: { kind: 'accept' } }];
      case 'drop':
        return [{ pkt, flow: { kind: 'drop' } }];
      case 'return':
        return [{ pkt, flow: { kind: 'return' } }];
      case 'continue':
        return [{ pkt, flow: { kind: 'next' } }];
      case 'jump':
        // A verdict ends its rule: when the callee returns or falls off its end, evaluation
        // resumes with the next rule of this chain.
        return this.runChain(table, v.target!, pkt, depth + 1).map((r) =>
          r.flow.kind === 'return' || r.flow.kind === 'next' ? { pkt: r.pkt, flow: { kind: 'miss' } } : r,
        );
      case 'goto':
        // A goto does not come back: falling off the target returns from this chain.
        return this.runChain(table, v.target!, pkt, depth + 1).map((r) =>
          r.flow.kind === 'next' ? { pkt: r.pkt, flow: { kind: 'return' } } : r,
        );
    }
  }

  /** Runs one rule for one packet; may fork. A rule that does not match yields `next`. */
  private runRule(
    table: TableState,
    chainName: string,
    index: number,
    rule: Stmt[],
    pkt: PacketState,
    depth: number,
  ): Branch[] {
    const at: RuleAt = {
      chain: chainName,
      rule: index,
      sets: setRefs(rule),
      text: `${chainName}[${index}]: ${rule.map(renderStmt).join(' ')}`,
    };
    const step = (pkts: PacketState[], i: number): Branch[] => {
      if (i === rule.length) return pkts.map((p) => ({ pkt: p, flow: { kind: 'next' } }));
      const out: Branch[] = [];
      const cont: PacketState[] = [];
      for (const p of pkts) {
        for (const r of this.runStmt(table, rule[i]!, p, at, depth)) {
          if (r.flow.kind === 'next') cont.push(r.pkt);
          else if (r.flow.kind === 'miss') out.push({ pkt: r.pkt, flow: { kind: 'next' } });
          else out.push(r);
        }
      }
      return [...out, ...(cont.length ? step(cont, i + 1) : [])];
    };
    return step([pkt], 0);
  }

  private runStmt(table: TableState, s: Stmt, pkt: PacketState, at: RuleAt, depth: number): Branch[] {
    try {
      return this.evalStmt(table, s, pkt, at, depth);
    } catch (e) {
      if (e === NO_MATCH) return [{ pkt, flow: { kind: 'miss' } }];
      throw e;
    }
  }

  private evalStmt(table: TableState, s: Stmt, pkt: PacketState, at: RuleAt, depth: number): Branch[] {
    const miss = (): Branch[] => [{ pkt, flow: { kind: 'miss' } }];
    const { text } = at;
    const did = (p: PacketState, effect: RuleEffect, line: string) =>
      p.steps.push({ kind: 'rule', chain: at.chain, rule: at.rule, sets: at.sets, effect, text: line });
    if ('match' in s) {
      const { op, left, right } = s.match;
      const results = this.evalAll(table, left, pkt).map((lv) => this.compare(table, op, lv, right, pkt));
      // A forked left side (numgen in a match) is not something nftproxy generates.
      return results.every(Boolean) ? [{ pkt, flow: { kind: 'next' } }] : miss();
    }
    if ('vmap' in s) {
      const out: Branch[] = [];
      for (const key of this.evalAll(table, s.vmap.key, pkt)) {
        const set = this.setOf(table, s.vmap.data);
        const el = set && lookup(set, key);
        if (!el || !Array.isArray(el)) {
          out.push(...miss());
          continue;
        }
        const v = exprToValue(el[1]) as VerdictValue;
        const p = clone(pkt);
        did(p, 'verdictMap', `${text} -> [${valueText(key)}] ${valueText(v)}`);
        out.push(...this.verdict(table, v, p, depth));
      }
      return out;
    }
    if ('mangle' in s) {
      const key = s.mangle.key;
      if (typeof key === 'object' && 'meta' in key && key.meta.key === 'mark') {
        const [v] = this.evalAll(table, s.mangle.value, pkt);
        const p = clone(pkt);
        p.mark = Number(v) >>> 0;
        did(p, 'mark', `${text} -> mark 0x${p.mark.toString(16)}`);
        return [{ pkt: p, flow: { kind: 'next' } }];
      }
      throw new Error(`tracer: unsupported mangle of ${JSON.stringify(key)}`);
    }
    if ('dnat' in s) {
      const out: Branch[] = [];
      const addr = s.dnat.addr;
      if (addr === undefined) throw new Error('tracer: dnat without address');
      for (const choice of this.evalAll(table, addr, pkt, true)) {
        if (choice === undefined) {
          out.push(...miss());
          continue;
        }
        const [ip, port] = Array.isArray(choice)
          ? (choice as [string, number])
          : [choice as string, pkt.dport];
        const p = clone(pkt);
        p.dnat = {
          addr: ip,
          port: s.dnat.port !== undefined ? Number(this.evalAll(table, s.dnat.port, pkt)[0]) : port,
        };
        p.daddr = p.dnat.addr;
        p.dport = p.dnat.port;
        p.ctStatus.push('dnat');
        did(p, 'dnat', `${text} -> ${formatHostPort(p.dnat.addr, p.dnat.port)}`);
        out.push({ pkt: p, flow: { kind: 'accept' } });
      }
      return out;
    }
    if ('masquerade' in s) {
      const p = clone(pkt);
      p.masquerade = true;
      did(p, 'masquerade', `${text} -> source rewritten to the outgoing interface's address`);
      return [{ pkt: p, flow: { kind: 'accept' } }];
    }
    if ('reject' in s) {
      const r = s.reject;
      if (r?.type === 'tcp reset' && pkt.protocol !== 'tcp') return miss(); // implicit `meta l4proto tcp`
      const type = !r?.type
        ? 'icmp port-unreachable'
        : r.type === 'tcp reset'
          ? 'tcp reset'
          : `${r.type} ${r.expr ?? 'port-unreachable'}`;
      const p = clone(pkt);
      did(p, 'reject', `${text} -> ${type}`);
      return [{ pkt: p, flow: { kind: 'reject', type } }];
    }
    if ('counter' in s) return [{ pkt, flow: { kind: 'next' } }];
    if ('affinityUpdate' in s) {
      if (s.affinityUpdate.protocol !== pkt.protocol) return miss();
      const p = clone(pkt);
      did(p, 'affinity', `${text} -> remembered for ${s.affinityUpdate.timeout}s`);
      return [{ pkt: p, flow: { kind: 'next' } }];
    }
    // A bare verdict statement.
    const v = exprToValue(s as Expr) as VerdictValue;
    const p = clone(pkt);
    did(p, 'verdict', text);
    return this.verdict(table, v, p, depth);
  }

  private setOf(table: TableState, ref: Expr): SetState | undefined {
    if (typeof ref !== 'string' || !ref.startsWith('@'))
      throw new Error(`tracer: anonymous maps are not supported: ${renderExpr(ref)}`);
    const s = table.sets.get(ref.slice(1));
    if (!s) throw new Error(`tracer: missing set ${ref}`);
    return s;
  }

  private compare(table: TableState, op: string, lv: Value, right: Expr, pkt: PacketState): boolean {
    let hit: boolean;
    if (typeof right === 'string' && right.startsWith('@')) {
      hit = lookup(this.setOf(table, right)!, lv) !== undefined;
    } else if (typeof right === 'object' && right !== null && ('prefix' in right || 'range' in right)) {
      hit = fieldMatches(lv, right);
    } else if (typeof right === 'object' && right !== null && 'set' in right) {
      hit = right.set.some((e) => elemMatches(lv, e));
    } else if (typeof right === 'string' && right.endsWith('*') && typeof lv === 'string') {
      // An interface name prefix: `iifname "veth*"`.
      hit = lv.startsWith(right.slice(0, -1));
    } else if (op === 'in') {
      const want = exprToValue(right);
      hit = Array.isArray(lv) ? (lv as Value[]).includes(want) : lv === want;
    } else {
      const rv = this.evalAll(table, right, pkt)[0];
      hit = irEqual(lv, rv);
    }
    return op === '!=' ? !hit : hit;
  }

  /**
   * All values an expression can take for this packet: one, except for `numgen` (and
   * `jhash`, whose value the tracer does not compute), which yield every slot. With
   * `allowMiss`, a failed map lookup yields `undefined` instead of throwing.
   */
  private evalAll(table: TableState, e: Expr, pkt: PacketState, allowMiss = false): Value[] {
    if (typeof e === 'string' || typeof e === 'number') return [e];
    if ('payload' in e) {
      const { protocol, field } = e.payload;
      if (field === 'saddr') return [pkt.saddr];
      if (field === 'daddr') return [pkt.daddr];
      if (field === 'dport' || field === 'sport') {
        // `tcp dport` on a UDP packet does not match; `th dport` matches any protocol.
        if (protocol !== 'th' && protocol !== pkt.protocol) throw NO_MATCH;
        return [field === 'dport' ? pkt.dport : pkt.sport];
      }
      throw new Error(`tracer: unsupported payload ${protocol} ${field}`);
    }
    if ('meta' in e) {
      if (e.meta.key === 'l4proto') return [pkt.protocol];
      if (e.meta.key === 'mark') return [pkt.mark];
      if (e.meta.key === 'iifname') return [pkt.iifname];
      throw new Error(`tracer: unsupported meta ${e.meta.key}`);
    }
    if ('ct' in e) {
      if (e.ct.key === 'state') return [['new']];
      if (e.ct.key === 'status') return [pkt.ctStatus];
      if (e.ct.dir === 'original' && / daddr$/.test(e.ct.key)) return [pkt.origDaddr];
      if (e.ct.dir === 'original' && e.ct.key === 'proto-dst') return [pkt.origDport];
      throw new Error(`tracer: unsupported ct ${e.ct.key}`);
    }
    if ('fib' in e) {
      if (e.fib.result === 'type' && e.fib.flags.includes('daddr'))
        return [this.local.has(pkt.daddr) ? 'local' : 'unicast'];
      if (e.fib.result === 'type' && e.fib.flags.includes('saddr'))
        return [this.local.has(pkt.saddr) ? 'local' : 'unicast'];
      throw new Error('tracer: unsupported fib lookup');
    }
    if ('concat' in e) {
      let combos: Value[][] = [[]];
      for (const part of e.concat) {
        const vals = this.evalAll(table, part, pkt);
        combos = combos.flatMap((c) => vals.map((v) => [...c, v]));
      }
      return combos;
    }
    if ('numgen' in e) return Array.from({ length: e.numgen.mod }, (_, i) => i + e.numgen.offset);
    if ('jhash' in e) return Array.from({ length: e.jhash.mod }, (_, i) => i + (e.jhash.offset ?? 0));
    if ('&' in e || '|' in e || '^' in e) {
      const [op, [a, b]] = Object.entries(e)[0] as [string, [Expr, Expr]];
      const x = Number(this.evalAll(table, a, pkt)[0]);
      const y = Number(this.evalAll(table, b, pkt)[0]);
      return [(op === '&' ? x & y : op === '|' ? x | y : x ^ y) >>> 0];
    }
    if ('map' in e) {
      const set = this.setOf(table, e.map.data)!;
      return this.evalAll(table, e.map.key, pkt).map((k) => {
        const el = lookup(set, k);
        if (!el || !Array.isArray(el)) {
          if (allowMiss) return undefined as unknown as Value;
          throw new Error(`tracer: no element [${valueText(k)}] in @${set.def.name}`);
        }
        return exprToValue(el[1]);
      });
    }
    throw new Error(`tracer: unsupported expression ${JSON.stringify(e)}`);
  }
}
