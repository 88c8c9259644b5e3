/**
 * The desired ruleset, kept up to date one service at a time, in compact form.
 *
 * The fixed part of each table (chains, rules, set declarations: a few hundred objects) is
 * IR. Everything per service is element lines (the canonical nft text of each element) held
 * by the service's dispatch units, one string per unit and set; nothing is held per element.
 *
 * A unit's *owned* lines start with its address and port, so only the unit that owns that
 * address writes them; its *shared* elements (hairpin pairs, cluster IPs) may come from
 * several units and are reference-counted by key. When two services claim one address and
 * port, the first in namespace/name order owns it; the other is reported and takes over if the
 * first goes. With `recording` on, every change is kept as a delta: the set difference of the
 * lines before and after, and the dispatch entries whose programming changed. That delta is
 * the next partial sync's transaction, so a sync costs the size of the change.
 */
import type { DesiredSource, DesiredTable } from '../nft/diff.js';
import type { Family } from '../nft/ir.js';
import { lineElem } from '../nft/lines.js';
import {
  type ChainState,
  elemKey,
  emptyRuleset,
  type Ruleset,
  type TableState,
  tableKey,
} from '../nft/ruleset.js';
import { type Diagnostic, objectRef } from '../k8s/types.js';
import { ipsOf, type ProxyConfig } from './config.js';
import { FAMILY_INFO } from './family.js';
import { affinityChainName, FAMILIES, precreatedPicks, pickChainName, Sets, TABLE } from './names.js';
import {
  compareServiceKeys,
  type DispatchEntry,
  type DispatchUnit,
  type ServiceContribution,
  sharedLine,
  unitBlocks,
  unitEndpoints,
  unitLabel,
  unitLineCounts,
  unitLines,
} from './service.js';
import { affinityChain, pickChain, staticTable } from './table.js';

/** Figures about the ruleset, for logs and metrics. */
export interface BuilderStats {
  /** Services with at least one programmed address. */
  services: number;
  /** Dispatch entries that forward to endpoints: one per address and port. */
  dispatchEntries: number;
  /** Backend slots programmed. */
  endpoints: number;
}

/** What programming changed for one claimed address: the unit before and after (absent: none). */
export interface EntryChange {
  before?: DispatchUnit;
  after?: DispatchUnit;
}

/** The changes since the last `takeDelta`. */
export interface RulesetDelta {
  /** Net element changes by table key, then set: line -> +1 added, -1 removed (0: none). */
  elements: Map<string, Map<string, Map<string, number>>>;
  /** Chains added, by table key. */
  chainsAdded: Map<string, Set<string>>;
  /** Programmed units that changed, by `table key . claim`. */
  entries: Map<string, EntryChange>;
}

/** An empty delta. */
export function emptyDelta(): RulesetDelta {
  return { elements: new Map(), chainsAdded: new Map(), entries: new Map() };
}

interface Table {
  family: Family;
  /** Chains with rules, set declarations; no elements. */
  skeleton: TableState;
  /** Lines from settings, by set. */
  staticLines: Map<string, string[]>;
  /** Reference counts of shared elements by set, then key. */
  shared: Map<string, Map<string, number>>;
  /** Elements programmed, by set (metrics). */
  counts: Map<string, number>;
  /**
   * The unit that owns each claimed address (its service is first in namespace/name order),
   * by claim key; and, for the rare contested ones, the other services' units.
   */
  claims: Map<string, DispatchUnit>;
  rivals: Map<string, Map<string, DispatchUnit>>;
}

/**
 * Which of two units claiming one address wins: a ClusterIP always (the API server allocated
 * it; an external IP or load balancer IP equal to it is a mistake or an attack), then the
 * service first in namespace/name order.
 */
function precedes(a: DispatchUnit, b: DispatchUnit): boolean {
  const ac = a.kind === 'clusterIP';
  if (ac !== (b.kind === 'clusterIP')) return ac;
  return compareServiceKeys(a.service, b.service) < 0;
}

/** A unit not programmed because another service holds its address. */
export interface Conflict {
  /** The losing unit; its `service` is the losing service. */
  unit: DispatchUnit;
  /** `namespace/name` of the service that holds the address. */
  owner: string;
  /** How the owner uses the address. */
  ownerKind: DispatchUnit['kind'];
}

/** Builds and maintains the desired ruleset for one node. */
export class RulesetBuilder implements DesiredSource {
  private readonly tables = new Map<string, Table>();
  /** Every service's units, and its diagnostics when it has any. */
  private readonly contributions = new Map<string, readonly DispatchUnit[]>();
  private readonly problems = new Map<string, Diagnostic[]>();
  private delta: RulesetDelta = emptyDelta();
  /**
   * Whether changes are recorded for `takeDelta`. Off while building a whole ruleset at
   * once (a full sync compares with the kernel instead).
   */
  recording = true;

  constructor(config: ProxyConfig, nodeIPs: string[]) {
    for (const family of FAMILIES) {
      const fi = FAMILY_INFO[family];
      const { table, lines } = staticTable(fi, config, ipsOf(nodeIPs, fi.version));
      for (const pick of precreatedPicks()) {
        const c = pickChain(fi, pick);
        table.chains.set(c.chain.name, c);
      }
      const counts = new Map<string, number>();
      for (const [set, l] of lines) counts.set(set, l.length);
      this.tables.set(tableKey(family, TABLE), {
        family,
        skeleton: table,
        staticLines: lines,
        shared: new Map(),
        counts,
        claims: new Map(),
        rivals: new Map(),
      });
    }
  }

  /**
   * Sets what a service contributes, replacing what it contributed before; `undefined`
   * removes it (deleted, or no longer proxied).
   */
  setService(key: string, contribution: ServiceContribution | undefined): void {
    const units = contribution?.units ?? [];
    // Ownership goes by the units' service, which must be the key they are set under.
    if (units.some((u) => u.service !== key))
      throw new Error(`units of ${units.find((u) => u.service !== key)!.service} set as ${key}`);
    for (const unit of this.contributions.get(key) ?? []) this.release(key, unit);
    if (contribution) this.contributions.set(key, contribution.units);
    else this.contributions.delete(key);
    if (contribution?.diagnostics.length) this.problems.set(key, contribution.diagnostics);
    else this.problems.delete(key);
    for (const unit of contribution?.units ?? []) this.claim(key, unit);
  }

  /** The changes since the last call, and a fresh delta. */
  takeDelta(): RulesetDelta {
    const d = this.delta;
    this.delta = emptyDelta();
    return d;
  }

  /** The table keys (`ip nftproxy`, `ip6 nftproxy`). */
  tableKeys(): string[] {
    return [...this.tables.keys()];
  }

  /** A table's chains (with rules) and set declarations, without elements. Do not modify. */
  skeleton(tk: string): TableState {
    return this.table(tk).skeleton;
  }

  /**
   * The desired element lines of every set of a table, by set: entries are line blocks
   * (several lines joined by `\n`) shared with the units, not copies.
   */
  lines(tk: string): Map<string, string[]> {
    const t = this.table(tk);
    const out = new Map<string, string[]>();
    const add = (set: string, block: string) => {
      let l = out.get(set);
      if (!l) out.set(set, (l = []));
      l.push(block);
    };
    for (const [set, lines] of t.staticLines) for (const l of lines) add(set, l);
    for (const [key, units] of this.contributions) {
      for (const unit of units) {
        if (tableKey(unit.family, TABLE) !== tk || !this.owns(key, unit)) continue;
        for (const [set, block] of unitBlocks(unit)) add(set, block);
      }
    }
    for (const [set, counts] of t.shared) for (const k of counts.keys()) add(set, sharedLine(set, k));
    return out;
  }

  /** A table's skeleton and element lines, as the planner takes them. */
  desired(tk: string): DesiredTable {
    return { skeleton: this.skeleton(tk), lines: this.lines(tk) };
  }

  /**
   * The whole desired ruleset as IR (elements parsed from their lines), for the tools that
   * trace, print or compare it. The operator itself never builds it.
   */
  ruleset(): Ruleset {
    const r = emptyRuleset();
    for (const tk of this.tables.keys()) {
      const sk = this.table(tk).skeleton;
      const t: TableState = {
        table: { ...sk.table },
        chains: new Map([...sk.chains].map(([n, c]) => [n, { chain: { ...c.chain }, rules: [...c.rules] }])),
        sets: new Map([...sk.sets].map(([n, s]) => [n, { def: { ...s.def }, elems: new Map() }])),
      };
      for (const [set, blocks] of this.lines(tk)) {
        const s = t.sets.get(set)!;
        for (const block of blocks) {
          for (const line of block.split('\n')) {
            const e = lineElem(s.def, line);
            s.elems.set(elemKey(e), e);
          }
        }
      }
      r.tables.set(tk, t);
    }
    return r;
  }

  /** Elements and chains programmed, over all tables (metrics). */
  counts(): { elements: number; chains: number } {
    let elements = 0;
    let chains = 0;
    for (const t of this.tables.values()) {
      chains += t.skeleton.chains.size;
      for (const n of t.counts.values()) elements += n;
    }
    return { elements, chains };
  }

  /** The service keys this builder knows. */
  serviceKeys(): IterableIterator<string> {
    return this.contributions.keys();
  }

  /** The programmed dispatch entries, by service (namespace/name order). */
  entries(): DispatchEntry[] {
    return this.units();
  }

  /** The programmed dispatch units, by service (namespace/name order). */
  units(): DispatchUnit[] {
    const out: DispatchUnit[] = [];
    for (const key of [...this.contributions.keys()].sort(compareServiceKeys)) {
      for (const unit of this.contributions.get(key)!) if (this.owns(key, unit)) out.push(unit);
    }
    return out;
  }

  /** Whether any programmed address has ClientIP affinity (its entries may need cleaning). */
  hasAffinity(): boolean {
    for (const t of this.tables.values()) {
      for (const name of t.skeleton.chains.keys()) if (/^affinity-\d+$/.test(name)) return true;
    }
    return false;
  }

  /**
   * Diagnostics of every service (or of `keys`), and one error per address a service lost
   * to another.
   */
  diagnostics(keys?: Iterable<string>): Diagnostic[] {
    const out: Diagnostic[] = [];
    for (const key of [...(keys ?? this.contributions.keys())].sort(compareServiceKeys)) {
      out.push(...(this.problems.get(key) ?? []));
      for (const c of this.conflictsOf(key)) {
        const [ns, name] = key.split('/') as [string, string];
        out.push({
          severity: 'error',
          object: objectRef('Service', { namespace: ns, name }),
          message: conflictMessage(c),
        });
      }
    }
    return out;
  }

  /** The units of a service that lost their address to another service. */
  private conflictsOf(key: string): Conflict[] {
    const out: Conflict[] = [];
    for (const unit of this.contributions.get(key) ?? []) {
      const owner = this.claimOf(unit)!;
      if (owner.service !== key) out.push({ unit, owner: owner.service, ownerKind: owner.kind });
    }
    return out;
  }

  /** The unit programmed for a claim (`10.96.0.10 . tcp . 80`, `tcp . 30080`) of a family. */
  owner(family: Family, claim: string): DispatchUnit | undefined {
    return this.tables.get(tableKey(family, TABLE))?.claims.get(claim);
  }

  /** Every unit that lost its address to another service (the rivals of contested claims). */
  conflicts(): Conflict[] {
    const out: Conflict[] = [];
    for (const t of this.tables.values()) {
      for (const [claim, rivals] of t.rivals) {
        const owner = t.claims.get(claim)!;
        for (const unit of rivals.values()) out.push({ unit, owner: owner.service, ownerKind: owner.kind });
      }
    }
    return out;
  }

  /**
   * The endpoints each affinity address may be stuck to, per family: `addr|proto|port` (or
   * `*|proto|port` for NodePorts) -> `ip|port`. An affinity entry pointing elsewhere is stale.
   */
  affinityTargets(): Map<Family, Map<string, Set<string>>> {
    const out = new Map<Family, Map<string, Set<string>>>();
    for (const [key, units] of this.contributions) {
      for (const unit of units) {
        if (unit.affinityTimeout === undefined || !this.owns(key, unit)) continue;
        const e = unit;
        let fam = out.get(e.family);
        if (!fam) out.set(e.family, (fam = new Map()));
        fam.set(`${e.address ?? '*'}|${e.protocol}|${e.port}`, unitEndpoints(unit));
      }
    }
    return out;
  }

  /** Counts over the programmed units. */
  stats(): BuilderStats {
    const s: BuilderStats = { services: 0, dispatchEntries: 0, endpoints: 0 };
    for (const [key, units] of this.contributions) {
      let any = false;
      for (const unit of units) {
        if (!this.owns(key, unit)) continue;
        any = true;
        if (unit.verdict === 'forward') {
          s.dispatchEntries++;
          s.endpoints += unit.endpoints;
        }
      }
      if (any) s.services++;
    }
    return s;
  }

  private table(tk: string): Table {
    const t = this.tables.get(tk);
    if (!t) throw new Error(`no table ${tk}`);
    return t;
  }

  private claimOf(unit: DispatchUnit): DispatchUnit | undefined {
    return this.owner(unit.family, unit.claim);
  }

  private owns(key: string, unit: DispatchUnit): boolean {
    return this.claimOf(unit)?.service === key;
  }

  private claim(key: string, unit: DispatchUnit): void {
    const t = this.tables.get(tableKey(unit.family, TABLE))!;
    const owner = t.claims.get(unit.claim);
    if (!owner) {
      t.claims.set(unit.claim, unit);
      this.program(unit);
      return;
    }
    let rivals = t.rivals.get(unit.claim);
    if (!rivals) t.rivals.set(unit.claim, (rivals = new Map()));
    if (precedes(unit, owner)) {
      rivals.set(owner.service, owner);
      this.unprogram(owner);
      t.claims.set(unit.claim, unit);
      this.program(unit);
    } else {
      rivals.set(key, unit);
    }
  }

  private release(key: string, unit: DispatchUnit): void {
    const t = this.tables.get(tableKey(unit.family, TABLE))!;
    const rivals = t.rivals.get(unit.claim);
    if (t.claims.get(unit.claim)?.service !== key) {
      rivals?.delete(key);
      if (rivals?.size === 0) t.rivals.delete(unit.claim);
      return;
    }
    this.unprogram(unit);
    let successor: DispatchUnit | undefined;
    for (const u of rivals?.values() ?? []) if (!successor || precedes(u, successor)) successor = u;
    if (successor === undefined) {
      t.claims.delete(unit.claim);
      return;
    }
    rivals!.delete(successor.service);
    if (rivals!.size === 0) t.rivals.delete(unit.claim);
    t.claims.set(unit.claim, successor);
    this.program(successor);
  }

  private program(unit: DispatchUnit): void {
    const tk = tableKey(unit.family, TABLE);
    const t = this.table(tk);
    const fi = FAMILY_INFO[unit.family];
    for (const pick of [unit.pick, unit.localPick])
      if (pick) this.ensureChain(tk, t, pickChainName(pick), () => pickChain(fi, pick));
    const timeout = unit.affinityTimeout;
    if (timeout !== undefined)
      this.ensureChain(tk, t, affinityChainName(timeout), () => affinityChain(fi, timeout));
    unitLineCounts(unit, (set, n) => t.counts.set(set, (t.counts.get(set) ?? 0) + n));
    if (this.recording) unitLines(unit, (set, line) => this.record(tk, set, line, 1));
    this.share(tk, t, Sets.hairpin, unit.hairpin, 1);
    if (unit.clusterIP !== undefined) this.share(tk, t, Sets.clusterIPs, [unit.clusterIP], 1);
    if (this.recording) this.recordEntry(tk, unit, 'after');
  }

  private unprogram(unit: DispatchUnit): void {
    const tk = tableKey(unit.family, TABLE);
    const t = this.table(tk);
    unitLineCounts(unit, (set, n) => t.counts.set(set, (t.counts.get(set) ?? 0) - n));
    if (this.recording) unitLines(unit, (set, line) => this.record(tk, set, line, -1));
    this.share(tk, t, Sets.hairpin, unit.hairpin, -1);
    if (unit.clusterIP !== undefined) this.share(tk, t, Sets.clusterIPs, [unit.clusterIP], -1);
    if (this.recording) this.recordEntry(tk, unit, 'before');
    // Pick chains stay until the next full sync: a service oscillating around a size must
    // not add and remove a chain every time (with nft 1.0.6 that replaces the table).
  }

  /** Counts shared keys up or down; their lines appear at the first and go with the last. */
  private share(tk: string, t: Table, set: string, keys: readonly string[], sign: 1 | -1): void {
    let counts = t.shared.get(set);
    if (!counts) t.shared.set(set, (counts = new Map()));
    for (const k of keys) {
      const n = (counts.get(k) ?? 0) + sign;
      if (n > 0) counts.set(k, n);
      else counts.delete(k);
      if ((sign > 0 && n === 1) || (sign < 0 && n === 0)) {
        t.counts.set(set, (t.counts.get(set) ?? 0) + sign);
        if (this.recording) this.record(tk, set, sharedLine(set, k), sign);
      }
    }
  }

  /** Adds a chain the first time a unit needs it. */
  private ensureChain(tk: string, t: Table, name: string, make: () => ChainState): void {
    if (t.skeleton.chains.has(name)) return;
    t.skeleton.chains.set(name, make());
    // Chains are always recorded: few, and a partial sync must add them.
    let added = this.delta.chainsAdded.get(tk);
    if (!added) this.delta.chainsAdded.set(tk, (added = new Set()));
    added.add(name);
  }

  private record(tk: string, set: string, line: string, sign: 1 | -1): void {
    let sets = this.delta.elements.get(tk);
    if (!sets) this.delta.elements.set(tk, (sets = new Map()));
    let lines = sets.get(set);
    if (!lines) sets.set(set, (lines = new Map()));
    lines.set(line, (lines.get(line) ?? 0) + sign);
  }

  /**
   * Records what a claim had programmed before this delta (the first unit unprogrammed) and
   * after it (the last one programmed).
   */
  private recordEntry(tk: string, unit: DispatchUnit, side: 'before' | 'after'): void {
    const claim = `${tk} ${unit.claim}`;
    const known = this.delta.entries.get(claim);
    if (side === 'before') {
      if (!known) this.delta.entries.set(claim, { before: unit });
      else if (known.after === unit) delete known.after;
      return;
    }
    if (known) known.after = unit;
    else this.delta.entries.set(claim, { after: unit });
  }
}

/** `10.96.0.10:80/TCP is already used by Service shop/web (its ClusterIP); not programmed for this service`. */
export function conflictMessage(c: Conflict): string {
  const [ns, name] = c.owner.split('/') as [string, string];
  const how = c.ownerKind === 'clusterIP' ? ' (its ClusterIP)' : '';
  return `${unitLabel(c.unit)} is already used by ${objectRef('Service', { namespace: ns, name })}${how}; not programmed for this service`;
}
