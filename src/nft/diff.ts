/**
 * Turns "what the kernel has" and "what we want" into one transaction.
 *
 * Steady-state changes are element adds and deletes. Chains are added or deleted only when
 * they appear or go (a pick chain for a new endpoint count); a static chain whose rules
 * changed is flushed and refilled. A table whose base chains or set declarations changed is
 * replaced whole, inside the same transaction, so there is never a moment without rules.
 *
 * The kernel side is a `TableDescription`: chains, rules and set declarations as comparable
 * strings in a backend's terms (the netlink backend compares attributes, the nft backend the
 * JSON it lists), and each set's element lines, asked for one set at a time so that no more
 * than one set's elements are held at once. The desired side is the skeleton IR and element
 * lines. The same planner serves full syncs, `nftproxy diff` and the tests.
 */
import type { Chain, Command, Elem, Family, NftSet, Stmt, Transaction } from './ir.js';
import { eachLine, elemLine, lineKey } from './lines.js';
import { comparableDef, isDynamic, type Ruleset, type SetState, type TableState } from './ruleset.js';

/** Counts of what a transaction does, for logs, traces and metrics. */
export interface DiffStats {
  /** Tables created or replaced whole. */
  tablesReplaced: number;
  tablesDeleted: number;
  chainsAdded: number;
  chainsDeleted: number;
  chainsFlushed: number;
  elementsAdded: number;
  elementsDeleted: number;
  /** Sets emptied and refilled whole in place (too large to read cheaply). */
  setsRewritten: number;
  /** Why tables were replaced rather than updated, when they were. */
  replaceReasons: string[];
}

/** A transaction and what it does. */
export interface Diff {
  tx: Transaction;
  stats: DiffStats;
}

/** Zero counts. */
export function emptyStats(): DiffStats {
  return {
    tablesReplaced: 0,
    tablesDeleted: 0,
    chainsAdded: 0,
    chainsDeleted: 0,
    chainsFlushed: 0,
    elementsAdded: 0,
    elementsDeleted: 0,
    setsRewritten: 0,
    replaceReasons: [],
  };
}

/** A table's chains, rules and set declarations as comparable strings. */
export interface TableDescription {
  chains: Map<string, { def: string; base: boolean; rules: string[] }>;
  /** `count`: how many elements the kernel holds, when the backend knows it without reading them. */
  sets: Map<string, { def: string; dynamic: boolean; map: boolean; count?: number }>;
}

/** How a backend describes tables, and what it can change in place. */
export interface Describer {
  /** The desired table's chains, rules and set declarations, comparable with the kernel's. */
  describe(t: TableState): TableDescription;
  /**
   * Whether a rule added to an existing table may not refer to an existing `typeof` map:
   * true for nft 1.0.6, which re-evaluates the typeof expressions it reads back and fails
   * ("conflicting protocols specified: ip vs. th"); the table is replaced instead.
   */
  readonly typeofRulesNeedNewTable: boolean;
  /**
   * Sets with more elements than this are emptied and refilled in a full sync rather than
   * read: reading is quadratic in the kernel (each dump round walks past what it already
   * sent), writing is linear.
   */
  readonly readLimit: number;
}

/** The desired state of one table: its skeleton and its element lines by set. */
export interface DesiredTable {
  skeleton: TableState;
  /** Element line blocks (one or more lines joined by `\n`) by set. */
  lines: Map<string, string[]>;
}

/** Canonical JSON, keys sorted. */
export function canonical(v: unknown): string {
  return JSON.stringify(v, (_k, val: unknown) =>
    typeof val === 'object' && val !== null && !Array.isArray(val)
      ? Object.fromEntries(Object.entries(val).sort(([a], [b]) => a.localeCompare(b)))
      : val,
  );
}

/**
 * A table's description as libnftables JSON sees it: the IR's own terms, for the nft backend
 * and the in-memory one. Set declarations compare as the kernel reports them back
 * (`comparableDef`).
 */
export function describeIR(t: TableState): TableDescription {
  const chains: TableDescription['chains'] = new Map();
  for (const [name, c] of t.chains) {
    const { comment: _c, ...def } = c.chain;
    chains.set(name, { def: canonical(def), base: !!c.chain.hook, rules: c.rules.map((r) => canonical(r)) });
  }
  const sets: TableDescription['sets'] = new Map();
  for (const [name, s] of t.sets)
    sets.set(name, { def: canonical(comparableDef(s)), dynamic: isDynamic(s), map: s.def.map !== undefined });
  return { chains, sets };
}

/** The IR describer, for backends that compare IR listings. */
export const irDescriber: Describer = {
  describe: describeIR,
  typeofRulesNeedNewTable: true,
  readLimit: Infinity,
};

const elements = (
  op: 'add' | 'delete',
  def: { family: Family; table: string; name: string },
  lines: string[],
): Command => {
  const obj = { element: { family: def.family, table: def.table, name: def.name, lines } };
  return op === 'add' ? { add: obj } : { delete: obj };
};

const setObject = (def: Omit<NftSet, 'elem'>) =>
  def.map === undefined ? { set: def as NftSet } : { map: def as NftSet };

/** The sets and maps a rule refers to (`@name`). */
function setRefs(x: unknown, out = new Set<string>()): Set<string> {
  if (typeof x === 'string') {
    if (x.startsWith('@')) out.add(x.slice(1));
  } else if (Array.isArray(x)) {
    for (const v of x) setRefs(v, out);
  } else if (typeof x === 'object' && x !== null) {
    for (const v of Object.values(x)) setRefs(v, out);
  }
  return out;
}

function ruleCommands(c: { chain: Chain; rules: Stmt[][] }): Command[] {
  return c.rules.map((expr) => ({
    add: { rule: { family: c.chain.family, table: c.chain.table, chain: c.chain.name, expr } },
  }));
}

function lineCount(blocks: string[]): number {
  let n = 0;
  for (const b of blocks) {
    if (!b) continue;
    n++;
    for (let i = b.indexOf('\n'); i >= 0; i = b.indexOf('\n', i + 1)) n++;
  }
  return n;
}

/**
 * Commands that create a table from nothing, or replace it atomically when it exists: `add
 * table` (so the delete cannot fail), `delete table`, then everything, elements last.
 */
export function createTable(d: DesiredTable, stats: DiffStats, replace = true): Command[] {
  const t = d.skeleton;
  const cmds: Command[] = replace ? [{ add: { table: t.table } }, { delete: { table: t.table } }] : [];
  cmds.push({ add: { table: t.table } });
  // Chains before the sets and rules that refer to them, elements last (verdict maps point
  // at chains).
  for (const c of t.chains.values()) cmds.push({ add: { chain: c.chain } });
  for (const s of t.sets.values()) cmds.push({ add: setObject(s.def) });
  for (const c of t.chains.values()) cmds.push(...ruleCommands(c));
  for (const s of t.sets.values()) {
    const blocks = d.lines.get(s.def.name);
    if (!blocks?.length) continue;
    cmds.push(elements('add', s.def, blocks));
    stats.elementsAdded += lineCount(blocks);
  }
  stats.tablesReplaced++;
  stats.chainsAdded += t.chains.size;
  return cmds;
}

/**
 * The reconciliation of one table that exists in the kernel. First `skeleton()` decides
 * what happens to chains and sets (or that the table must be replaced); then each set both
 * sides hold is compared with `compareSet`, one at a time; `commands()` orders the result.
 */
export class TablePlan {
  /** Why the table must be replaced whole; undefined if it can be updated in place. */
  readonly replaceReason: string | undefined;
  /** Sets whose elements must be compared (present on both sides, not filled by the kernel). */
  readonly setsToCompare: string[] = [];
  private readonly addChains: Command[] = [];
  private readonly addSets: Command[] = [];
  private readonly flushChains: Command[] = [];
  private readonly flushSets: Command[] = [];
  private readonly delElems: Command[] = [];
  private readonly addRules: Command[] = [];
  private readonly addElems: Command[] = [];
  private readonly delChains: Command[] = [];
  private readonly delSets: Command[] = [];

  constructor(
    private readonly desired: DesiredTable,
    kernel: TableDescription,
    describer: Describer,
    private readonly stats: DiffStats,
  ) {
    const t = desired.skeleton;
    const want = describer.describe(t);
    this.replaceReason = replaceReason(t, want, kernel, describer);
    if (this.replaceReason) return;
    for (const [name, c] of t.chains) {
      const have = kernel.chains.get(name);
      const w = want.chains.get(name)!;
      if (!have) {
        this.addChains.push({ add: { chain: c.chain } });
        stats.chainsAdded++;
      } else if (sameList(have.rules, w.rules)) {
        continue;
      } else {
        this.flushChains.push({ flush: { chain: c.chain } });
        stats.chainsFlushed++;
      }
      this.addRules.push(...ruleCommands(c));
    }
    for (const name of kernel.chains.keys()) {
      if (t.chains.has(name)) continue;
      const chain: Chain = { family: t.table.family, table: t.table.name, name };
      // Flush first: a rule of the dying chain may jump to another dying chain.
      this.flushChains.push({ flush: { chain } });
      this.delChains.push({ delete: { chain } });
      stats.chainsDeleted++;
    }
    for (const [name, s] of t.sets) {
      const have = kernel.sets.get(name);
      if (!have) {
        this.addSets.push({ add: setObject(s.def) });
        const blocks = desired.lines.get(name);
        if (blocks?.length) {
          this.addElems.push(elements('add', s.def, blocks));
          stats.elementsAdded += lineCount(blocks);
        }
      } else if (!isDynamic(s) && !have.dynamic) {
        // The kernel fills dynamic sets (affinity); their elements are not desired state.
        this.setsToCompare.push(name);
      }
    }
    for (const [name, have] of kernel.sets) {
      if (t.sets.has(name)) continue;
      // Only the kind and name matter to a delete.
      const def: NftSet = { family: t.table.family, table: t.table.name, name, type: [] };
      this.delSets.push({ delete: have.map ? { map: def } : { set: def } });
    }
  }

  /**
   * Compares one set's elements with what the kernel holds (`kernelLines`, consumed): adds
   * the missing, deletes the extra. An interval set of one field is emptied and refilled
   * instead (its elements are start and end points in the kernel, which nft and the kernel
   * merge and split; these sets come from settings and are small).
   */
  compareSet(name: string, kernelLines: Set<string>): void {
    const s = this.desired.skeleton.sets.get(name)!;
    const blocks = this.desired.lines.get(name) ?? [];
    const before = kernelLines.size;
    const adds: string[] = [];
    for (const line of eachLine(blocks)) {
      if (!kernelLines.delete(line)) adds.push(line);
    }
    const dels = [...kernelLines];
    if (!adds.length && !dels.length) return;
    if ((s.def.flags?.includes('interval') ?? false) && !isConcat(s)) {
      this.flushSets.push({ flush: setObject(s.def) });
      if (blocks.length) this.addElems.push(elements('add', s.def, blocks));
      this.stats.elementsDeleted += before;
      this.stats.elementsAdded += lineCount(blocks);
      return;
    }
    if (dels.length) this.delElems.push(elements('delete', s.def, dels));
    if (adds.length) this.addElems.push(elements('add', s.def, adds));
    this.stats.elementsDeleted += dels.length;
    this.stats.elementsAdded += adds.length;
  }

  /**
   * Puts back the elements of set `name` that someone else added or deleted (`events`, in
   * the order they were committed), key by key, without reading the set: a key they touched
   * ends as desired, holding its desired line or absent.
   */
  restoreKeys(name: string, events: readonly { op: '+' | '-'; line: string }[]): void {
    const s = this.desired.skeleton.sets.get(name)!;
    // What the kernel holds now under each touched key.
    const now = new Map<string, string | undefined>();
    for (const e of events) now.set(lineKey(e.line), e.op === '+' ? e.line : undefined);
    const want = new Map<string, string>();
    for (const line of eachLine(this.desired.lines.get(name) ?? [])) {
      const k = lineKey(line);
      if (now.has(k)) want.set(k, line);
    }
    const adds: string[] = [];
    const dels: string[] = [];
    for (const [k, have] of now) {
      const w = want.get(k);
      if (have === w) continue;
      if (have !== undefined) dels.push(have);
      if (w !== undefined) adds.push(w);
    }
    if (dels.length) this.delElems.push(elements('delete', s.def, dels));
    if (adds.length) this.addElems.push(elements('add', s.def, adds));
    this.stats.elementsDeleted += dels.length;
    this.stats.elementsAdded += adds.length;
  }

  /**
   * Empties a set and refills it with the desired elements, without reading it (`count`:
   * how many elements the kernel holds, for the figures).
   */
  rewriteSet(name: string, count: number): void {
    const s = this.desired.skeleton.sets.get(name)!;
    const blocks = this.desired.lines.get(name) ?? [];
    this.flushSets.push({ flush: setObject(s.def) });
    if (blocks.length) this.addElems.push(elements('add', s.def, blocks));
    this.stats.elementsDeleted += count;
    this.stats.elementsAdded += lineCount(blocks);
    this.stats.setsRewritten++;
  }

  /**
   * The commands, ordered so that new chains and sets exist before anything refers to them,
   * and changed chains are emptied and stale elements removed before chains and sets that
   * lose their last reference are deleted.
   */
  commands(): Command[] {
    return [
      ...this.addChains,
      ...this.addSets,
      ...this.flushChains,
      ...this.flushSets,
      ...this.delElems,
      ...this.addRules,
      ...this.addElems,
      ...this.delChains,
      ...this.delSets,
    ];
  }
}

function isConcat(s: SetState): boolean {
  const t = s.def.type;
  return Array.isArray(t) ? t.length > 1 : t.includes(' . ');
}

function sameList(a: string[], b: string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * Why a table cannot be reconciled in place, or undefined if it can:
 * - base chains or set declarations changed (a rare, upgrade-time change);
 * - with nft 1.0.6, a rule would be added that refers to an existing `typeof` map.
 * The table is then replaced whole, still in one transaction. Table comments are not
 * compared: nft 1.0.6 does not list them in JSON.
 */
function replaceReason(
  t: TableState,
  want: TableDescription,
  kernel: TableDescription,
  describer: Describer,
): string | undefined {
  for (const [name, c] of want.chains) {
    const old = kernel.chains.get(name);
    if (old && old.def !== c.def) return `${old.base || c.base ? 'base ' : ''}chain ${name} changed`;
  }
  for (const [name, c] of kernel.chains)
    if (c.base && !want.chains.has(name)) return `base chain ${name} removed`;
  for (const [name, s] of want.sets) {
    const old = kernel.sets.get(name);
    if (old && old.def !== s.def) return `set ${name} declaration changed`;
  }
  if (describer.typeofRulesNeedNewTable) {
    for (const [name, c] of t.chains) {
      const old = kernel.chains.get(name);
      if (old && sameList(old.rules, want.chains.get(name)!.rules)) continue;
      for (const ref of setRefs(c.rules)) {
        if (t.sets.get(ref)?.def.typeof && kernel.sets.has(ref))
          return `new rule in ${name} refers to typeof map ${ref} (nft 1.0.6)`;
      }
    }
  }
  return undefined;
}

/** The desired tables of an IR ruleset: skeletons and element lines. */
export function desiredOf(r: Ruleset): Map<string, DesiredTable> {
  const out = new Map<string, DesiredTable>();
  for (const [k, t] of r.tables) {
    const skeleton: TableState = {
      table: t.table,
      chains: t.chains,
      sets: new Map([...t.sets].map(([n, s]) => [n, { def: s.def, elems: new Map<string, Elem>() }])),
    };
    const lines = new Map<string, string[]>();
    for (const [n, s] of t.sets) if (s.elems.size) lines.set(n, [...s.elems.values()].map(elemLine));
    out.set(k, { skeleton, lines });
  }
  return out;
}

/**
 * The transaction that takes IR ruleset `from` to `to` (both compared as IR). With `from`
 * undefined (state unknown), every table of `to` is replaced whole. Tables in `from` but not
 * in `to` are deleted. For tests and tools; the syncer plans against the kernel itself.
 */
export function diffRulesets(
  from: Ruleset | undefined,
  to: Ruleset,
  describer: Describer = irDescriber,
): Diff {
  const stats = emptyStats();
  const commands: Command[] = [];
  for (const [key, d] of desiredOf(to)) {
    const old = from?.tables.get(key);
    if (!old) {
      commands.push(...createTable(d, stats));
      continue;
    }
    const plan = new TablePlan(d, describeIR(old), describer, stats);
    if (plan.replaceReason) {
      stats.replaceReasons.push(`${key}: ${plan.replaceReason}`);
      commands.push(...createTable(d, stats));
      continue;
    }
    for (const name of plan.setsToCompare) {
      plan.compareSet(name, new Set([...old.sets.get(name)!.elems.values()].map(elemLine)));
    }
    commands.push(...plan.commands());
  }
  for (const [key, t] of from?.tables ?? []) {
    if (!to.tables.has(key)) {
      commands.push({ delete: { table: t.table } });
      stats.tablesDeleted++;
    }
  }
  return { tx: { commands }, stats };
}

/** Changes recorded by an incremental builder: net element changes and chains added. */
export interface ElementDelta {
  /** By table key, then set: line -> +1 added, -1 removed (0: no change). */
  elements: Map<string, Map<string, Map<string, number>>>;
  /** Chains added, by table key. */
  chainsAdded: Map<string, Set<string>>;
}

/** The desired state a delta applies to. */
export interface DesiredSource {
  /** A table's chains and set declarations: cheap. */
  skeleton(tableKey: string): TableState;
  /** A table with all its element lines: costly, only when the table must be written whole. */
  desired(tableKey: string): DesiredTable;
}

/**
 * The transaction for a delta: each set's removed lines deleted and added lines added (a
 * changed map element is both), new chains added with their rules. With nft 1.0.6, a new
 * chain whose rules use a typeof map makes the table be replaced whole (see replaceReason).
 */
export function deltaTransaction(delta: ElementDelta, current: DesiredSource, describer: Describer): Diff {
  const stats = emptyStats();
  const commands: Command[] = [];
  for (const key of new Set([...delta.elements.keys(), ...delta.chainsAdded.keys()])) {
    const t = current.skeleton(key);
    const newChains = [...(delta.chainsAdded.get(key) ?? [])].filter((name) => t.chains.has(name));
    const typeofUse =
      describer.typeofRulesNeedNewTable &&
      newChains.find((name) =>
        [...setRefs(t.chains.get(name)!.rules)].some((ref) => t.sets.get(ref)?.def.typeof),
      );
    if (typeofUse) {
      stats.replaceReasons.push(`${key}: new rule in ${typeofUse} refers to a typeof map (nft 1.0.6)`);
      commands.push(...createTable(current.desired(key), stats));
      continue;
    }
    const addChains: Command[] = [];
    const addRules: Command[] = [];
    for (const name of newChains) {
      const c = t.chains.get(name)!;
      addChains.push({ add: { chain: c.chain } });
      addRules.push(...ruleCommands(c));
      stats.chainsAdded++;
    }
    const dels: Command[] = [];
    const adds: Command[] = [];
    for (const [set, changes] of delta.elements.get(key) ?? []) {
      const s = t.sets.get(set);
      if (!s) continue;
      const del: string[] = [];
      const add: string[] = [];
      for (const [line, n] of changes) {
        if (n < 0) del.push(line);
        else if (n > 0) add.push(line);
      }
      if (del.length) dels.push(elements('delete', s.def, del));
      if (add.length) adds.push(elements('add', s.def, add));
      stats.elementsDeleted += del.length;
      stats.elementsAdded += add.length;
    }
    commands.push(...addChains, ...addRules, ...dels, ...adds);
  }
  return { tx: { commands }, stats };
}
