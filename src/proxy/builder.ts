/**
 * The ruleset, kept up to date one service at a time.
 *
 * Each service contributes dispatch units (compileService). A unit's *owned* elements have
 * keys derived from its address and port, so only the unit that owns that address writes
 * them; its *shared* elements (hairpin pairs, cluster IPs) may come from several units and
 * are reference-counted. When two services claim one address and port, the first in
 * namespace/name order owns it; the other is reported and takes over if the first goes.
 * Every change is recorded as a delta, which becomes the next transaction, so a partial
 * sync costs the size of the change, not of the cluster.
 */
import type { Elem, Family } from '../nft/ir.js';
import { emptyDelta, recordChange, type RulesetDelta } from '../nft/diff.js';
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
import { affinityChainName, FAMILIES, precreatedPicks, pickChainName, TABLE } from './names.js';
import {
  compareServiceKeys,
  type DispatchEntry,
  type DispatchUnit,
  type ServiceContribution,
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

/** Builds and maintains the desired ruleset for one node. */
export class RulesetBuilder {
  /** The desired ruleset, changed in place. */
  readonly ruleset: Ruleset = emptyRuleset();
  private readonly contributions = new Map<string, ServiceContribution>();
  /** Claim key -> service key -> that service's unit for the claim. */
  private readonly claims = new Map<string, Map<string, DispatchUnit>>();
  /** Reference counts of shared elements: table key . set -> element key -> count. */
  private readonly sharedCounts = new Map<string, Map<string, number>>();
  private delta: RulesetDelta = emptyDelta();
  /**
   * Whether changes are recorded for `takeDelta`. Off while building a whole ruleset at
   * once (a full sync diffs against the kernel instead): recording 300k elements costs
   * about a second at 50k services.
   */
  recording = true;

  constructor(config: ProxyConfig, nodeIPs: string[]) {
    for (const family of FAMILIES) {
      const fi = FAMILY_INFO[family];
      const t = staticTable(fi, config, ipsOf(nodeIPs, fi.version));
      for (const pick of precreatedPicks()) {
        const c = pickChain(fi, pick);
        t.chains.set(c.chain.name, c);
      }
      this.ruleset.tables.set(tableKey(family, TABLE), t);
    }
  }

  /**
   * Sets what a service contributes, replacing what it contributed before; `undefined`
   * removes it (deleted, or no longer proxied).
   */
  setService(key: string, contribution: ServiceContribution | undefined): void {
    for (const unit of this.contributions.get(key)?.units ?? []) this.release(key, unit);
    if (contribution) this.contributions.set(key, contribution);
    else this.contributions.delete(key);
    for (const unit of contribution?.units ?? []) this.claim(key, unit);
  }

  /** The changes since the last call, and a fresh delta. */
  takeDelta(): RulesetDelta {
    const d = this.delta;
    this.delta = emptyDelta();
    return d;
  }

  /** The service keys this builder knows. */
  serviceKeys(): IterableIterator<string> {
    return this.contributions.keys();
  }

  /** The programmed dispatch entries, by service (namespace/name order). */
  entries(): DispatchEntry[] {
    const out: DispatchEntry[] = [];
    for (const key of [...this.contributions.keys()].sort(compareServiceKeys)) {
      for (const unit of this.contributions.get(key)!.units) if (this.owns(key, unit)) out.push(unit.entry);
    }
    return out;
  }

  /**
   * Diagnostics of every service (or of `keys`), and one error per address a service lost
   * to another.
   */
  diagnostics(keys?: Iterable<string>): Diagnostic[] {
    const out: Diagnostic[] = [];
    for (const key of [...(keys ?? this.contributions.keys())].sort(compareServiceKeys)) {
      const c = this.contributions.get(key);
      if (!c) continue;
      out.push(...c.diagnostics);
      for (const unit of c.units) {
        const owner = this.owner(this.claims.get(unit.claim)!);
        if (owner === key) continue;
        const [ns, name] = key.split('/') as [string, string];
        const [ons, oname] = owner!.split('/') as [string, string];
        out.push({
          severity: 'error',
          object: objectRef('Service', { namespace: ns, name }),
          message: `${unit.label} is already used by ${objectRef('Service', { namespace: ons, name: oname })}; not programmed for this service`,
        });
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
    for (const [key, c] of this.contributions) {
      for (const unit of c.units) {
        if (unit.affinityTimeout === undefined || !this.owns(key, unit)) continue;
        const e = unit.entry;
        let fam = out.get(e.family);
        if (!fam) out.set(e.family, (fam = new Map()));
        const eps = new Set([...e.backends, ...(e.localBackends ?? [])].map((b) => `${b.ip}|${b.port}`));
        fam.set(`${e.address ?? '*'}|${e.protocol}|${e.port}`, eps);
      }
    }
    return out;
  }

  /** Counts over the programmed units. */
  stats(): BuilderStats {
    const s: BuilderStats = { services: 0, dispatchEntries: 0, endpoints: 0 };
    for (const [key, c] of this.contributions) {
      let any = false;
      for (const unit of c.units) {
        if (!this.owns(key, unit)) continue;
        any = true;
        if (unit.entry.verdict === 'forward') {
          s.dispatchEntries++;
          s.endpoints += unit.entry.backends.length;
        }
      }
      if (any) s.services++;
    }
    return s;
  }

  private owns(key: string, unit: DispatchUnit): boolean {
    return this.owner(this.claims.get(unit.claim)!) === key;
  }

  private owner(claimants: Map<string, DispatchUnit>): string | undefined {
    let best: string | undefined;
    for (const k of claimants.keys()) if (best === undefined || compareServiceKeys(k, best) < 0) best = k;
    return best;
  }

  private claim(key: string, unit: DispatchUnit): void {
    let claimants = this.claims.get(unit.claim);
    if (!claimants) this.claims.set(unit.claim, (claimants = new Map()));
    const before = this.owner(claimants);
    claimants.set(key, unit);
    if (before === undefined) {
      this.program(unit);
    } else if (compareServiceKeys(key, before) < 0) {
      this.unprogram(claimants.get(before)!);
      this.program(unit);
    }
  }

  private release(key: string, unit: DispatchUnit): void {
    const claimants = this.claims.get(unit.claim)!;
    const owner = this.owner(claimants);
    claimants.delete(key);
    if (owner === key) {
      this.unprogram(unit);
      const next = this.owner(claimants);
      if (next !== undefined) this.program(claimants.get(next)!);
    }
    if (claimants.size === 0) this.claims.delete(unit.claim);
  }

  private table(family: Family): [string, TableState] {
    const k = tableKey(family, TABLE);
    return [k, this.ruleset.tables.get(k)!];
  }

  private program(unit: DispatchUnit): void {
    const [tk, t] = this.table(unit.family);
    const fi = FAMILY_INFO[unit.family];
    for (const pick of unit.picks) this.ensureChain(tk, t, pickChainName(pick), () => pickChain(fi, pick));
    const timeout = unit.affinityTimeout;
    if (timeout !== undefined)
      this.ensureChain(tk, t, affinityChainName(timeout), () => affinityChain(fi, timeout));
    for (const { set, elems } of unit.owned) for (const e of elems) this.put(tk, t, set, e, elemKey(e));
    for (const { set, elems } of unit.shared) {
      const counts = this.counts(tk, set);
      for (const e of elems) {
        const k = elemKey(e);
        const n = counts.get(k) ?? 0;
        counts.set(k, n + 1);
        if (n === 0) this.put(tk, t, set, e, k);
      }
    }
  }

  /** Adds a chain the first time a unit needs it. */
  private ensureChain(tk: string, t: TableState, name: string, make: () => ChainState): void {
    if (t.chains.has(name)) return;
    t.chains.set(name, make());
    // Chains are always recorded: few, and a partial sync must know to replace the table.
    let added = this.delta.chainsAdded.get(tk);
    if (!added) this.delta.chainsAdded.set(tk, (added = new Set()));
    added.add(name);
  }

  private unprogram(unit: DispatchUnit): void {
    const [tk, t] = this.table(unit.family);
    for (const { set, elems } of unit.owned) for (const e of elems) this.remove(tk, t, set, elemKey(e));
    for (const { set, elems } of unit.shared) {
      const counts = this.counts(tk, set);
      for (const e of elems) {
        const k = elemKey(e);
        const n = counts.get(k)!;
        if (n > 1) {
          counts.set(k, n - 1);
        } else {
          counts.delete(k);
          this.remove(tk, t, set, k);
        }
      }
    }
    // Pick chains stay until the next full sync: recreating one means replacing the table
    // (nft 1.0.6), so a service oscillating around a size must not do that every time.
  }

  private counts(tk: string, set: string): Map<string, number> {
    const k = `${tk} ${set}`;
    let m = this.sharedCounts.get(k);
    if (!m) this.sharedCounts.set(k, (m = new Map()));
    return m;
  }

  private put(tk: string, t: TableState, set: string, elem: Elem, k: string): void {
    const elems = t.sets.get(set)!.elems;
    const before: Elem | undefined = elems.get(k);
    elems.set(k, elem);
    if (this.recording) recordChange(this.delta, tk, set, k, before, elem);
  }

  private remove(tk: string, t: TableState, set: string, k: string): void {
    const elems = t.sets.get(set)!.elems;
    const before = elems.get(k);
    if (before === undefined) return;
    elems.delete(k);
    if (this.recording) recordChange(this.delta, tk, set, k, before, undefined);
  }
}
