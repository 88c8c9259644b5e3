/**
 * Turns "what the kernel has" and "what we want" into one transaction.
 *
 * Steady-state changes are element adds and deletes. Chains are added or deleted only when
 * they appear or go (a pick chain for a new endpoint count); a static chain whose rules
 * changed is flushed and refilled. A table whose base chains or set declarations changed is
 * replaced whole, inside the same transaction, so there is never a moment without rules.
 */
import type { Command, Elem, Transaction } from './ir.js';
import { elemLine } from './lines.js';
import {
  comparableDef,
  irEqual,
  isDynamic,
  type Ruleset,
  type SetState,
  type TableState,
} from './ruleset.js';

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
  /** Why tables were replaced rather than updated, when they were. */
  replaceReasons: string[];
}

/** A transaction and what it does. */
export interface Diff {
  tx: Transaction;
  stats: DiffStats;
}

function emptyStats(): DiffStats {
  return {
    tablesReplaced: 0,
    tablesDeleted: 0,
    chainsAdded: 0,
    chainsDeleted: 0,
    chainsFlushed: 0,
    elementsAdded: 0,
    elementsDeleted: 0,
    replaceReasons: [],
  };
}

/** Commands that create `t` from nothing, in an order the kernel accepts. */
function createTable(t: TableState, stats: DiffStats): Command[] {
  const cmds: Command[] = [{ add: { table: t.table } }];
  // Chains before the sets and rules that refer to them, elements last (verdict maps
  // point at chains).
  for (const c of t.chains.values()) cmds.push({ add: { chain: c.chain } });
  for (const s of t.sets.values()) cmds.push(addSet(s));
  for (const c of t.chains.values()) {
    for (const expr of c.rules) {
      cmds.push({
        add: { rule: { family: c.chain.family, table: c.chain.table, chain: c.chain.name, expr } },
      });
    }
  }
  for (const s of t.sets.values()) {
    if (s.elems.size) {
      cmds.push(elementCmd('add', s, [...s.elems.values()]));
      stats.elementsAdded += s.elems.size;
    }
  }
  stats.tablesReplaced++;
  stats.chainsAdded += t.chains.size;
  return cmds;
}

function addSet(s: SetState): Command {
  return s.def.map === undefined ? { add: { set: s.def } } : { add: { map: s.def } };
}

function elementCmd(op: 'add' | 'delete', s: SetState, elem: Elem[]): Command {
  const obj = {
    element: { family: s.def.family, table: s.def.table, name: s.def.name, lines: elem.map(elemLine) },
  };
  return op === 'add' ? { add: obj } : { delete: obj };
}

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

/**
 * Why two versions of a table cannot be reconciled incrementally, or undefined if they can.
 * Then the table is replaced whole, still in one transaction:
 * - base chains or set declarations changed (a rare, upgrade-time change);
 * - a rule would be added that refers to an existing `typeof` map. nft 1.0.6 re-evaluates
 *   the typeof expressions it reads back from the kernel and fails ("conflicting protocols
 *   specified: ip vs. th"); created in the same batch as the map, the rule is fine.
 */
function replaceReason(from: TableState, to: TableState): string | undefined {
  // The table objects themselves are not compared: nft 1.0.6 does not list a table's
  // comment in JSON, so the comment we set could never be seen to match.
  for (const [name, c] of to.chains) {
    const old = from.chains.get(name);
    if (old && !irEqual(old.chain, c.chain)) return `base chain ${name} changed`;
  }
  for (const [name, c] of from.chains)
    if (c.chain.hook && !to.chains.has(name)) return `base chain ${name} removed`;
  for (const [name, s] of to.sets) {
    const old = from.sets.get(name);
    if (old && !irEqual(comparableDef(old), comparableDef(s))) {
      return `set ${name} declaration changed`;
    }
  }
  for (const [name, c] of to.chains) {
    const old = from.chains.get(name);
    if (old && irEqual(old.rules, c.rules)) continue;
    for (const ref of setRefs(c.rules)) {
      if (to.sets.get(ref)?.def.typeof && from.sets.has(ref))
        return `new rule in ${name} refers to typeof map ${ref} (nft 1.0.6)`;
    }
  }
  return undefined;
}

function diffTable(from: TableState, to: TableState, stats: DiffStats): Command[] {
  const { family, name: table } = to.table;
  const addChains: Command[] = [];
  const addSets: Command[] = [];
  const flushChains: Command[] = [];
  const delElems: Command[] = [];
  const addRules: Command[] = [];
  const addElems: Command[] = [];
  const delChains: Command[] = [];
  const delSets: Command[] = [];

  for (const [name, c] of to.chains) {
    const old = from.chains.get(name);
    if (!old) {
      addChains.push({ add: { chain: c.chain } });
      stats.chainsAdded++;
    } else if (irEqual(old.rules, c.rules)) {
      continue;
    } else {
      flushChains.push({ flush: { chain: c.chain } });
      stats.chainsFlushed++;
    }
    for (const expr of c.rules) addRules.push({ add: { rule: { family, table, chain: name, expr } } });
  }
  for (const [name, c] of from.chains) {
    if (to.chains.has(name)) continue;
    // Flush first: a rule of the dying chain may jump to another dying chain.
    flushChains.push({ flush: { chain: c.chain } });
    delChains.push({ delete: { chain: c.chain } });
    stats.chainsDeleted++;
  }

  for (const [name, s] of to.sets) {
    const old = from.sets.get(name);
    if (!old) {
      addSets.push(addSet(s));
      if (s.elems.size) {
        addElems.push(elementCmd('add', s, [...s.elems.values()]));
        stats.elementsAdded += s.elems.size;
      }
      continue;
    }
    // The kernel fills dynamic sets (affinity); their elements are not desired state.
    if (isDynamic(s)) continue;
    const dels: Elem[] = [];
    const adds: Elem[] = [];
    for (const [k, e] of old.elems) {
      const now = s.elems.get(k);
      if (now === undefined || !irEqual(now, e)) dels.push(e);
    }
    for (const [k, e] of s.elems) {
      const before = old.elems.get(k);
      if (before === undefined || !irEqual(before, e)) adds.push(e);
    }
    if (dels.length) delElems.push(elementCmd('delete', s, dels));
    if (adds.length) addElems.push(elementCmd('add', s, adds));
    stats.elementsDeleted += dels.length;
    stats.elementsAdded += adds.length;
  }
  for (const [name, s] of from.sets) {
    if (!to.sets.has(name))
      delSets.push(s.def.map === undefined ? { delete: { set: s.def } } : { delete: { map: s.def } });
  }

  // Order: new chains and sets exist before anything refers to them; changed chains are
  // emptied and stale elements removed before chains and sets that lose their last
  // reference are deleted.
  return [
    ...addChains,
    ...addSets,
    ...flushChains,
    ...delElems,
    ...addRules,
    ...addElems,
    ...delChains,
    ...delSets,
  ];
}

/**
 * The transaction that takes the kernel from `from` to `to`. With `from` undefined (first
 * sync, or after a failure when the kernel state is unknown), every table of `to` is
 * replaced whole: `add table` + `delete table` + the full contents, atomically.
 * Tables in `from` but not in `to` are deleted.
 */
export function diffRulesets(from: Ruleset | undefined, to: Ruleset): Diff {
  const stats = emptyStats();
  const commands: Command[] = [];
  for (const [key, t] of to.tables) {
    const old = from?.tables.get(key);
    const reason = old && replaceReason(old, t);
    if (old && !reason) {
      commands.push(...diffTable(old, t, stats));
    } else {
      if (reason) stats.replaceReasons.push(`${key}: ${reason}`);
      commands.push({ add: { table: t.table } }, { delete: { table: t.table } }, ...createTable(t, stats));
    }
  }
  for (const [key, t] of from?.tables ?? []) {
    if (!to.tables.has(key)) {
      commands.push({ delete: { table: t.table } });
      stats.tablesDeleted++;
    }
  }
  return { tx: { commands }, stats };
}

/** Before and after of one element; undefined means absent. */
export interface ElementChange {
  before?: Elem;
  after?: Elem;
}

/**
 * Changes made to a ruleset in place by an incremental builder: elements (by table key, set
 * and element key) and chains added. Much cheaper to turn into a transaction than a diff of
 * whole rulesets.
 */
export interface RulesetDelta {
  elements: Map<string, Map<string, Map<string, ElementChange>>>;
  /** Chains added, by table key. */
  chainsAdded: Map<string, Set<string>>;
}

/** An empty delta. */
export function emptyDelta(): RulesetDelta {
  return { elements: new Map(), chainsAdded: new Map() };
}

/** Records a change to one element, keeping the earliest `before` when one is recorded already. */
export function recordChange(
  delta: RulesetDelta,
  table: string,
  set: string,
  key: string,
  before: Elem | undefined,
  after: Elem | undefined,
): void {
  let sets = delta.elements.get(table);
  if (!sets) delta.elements.set(table, (sets = new Map()));
  let elems = sets.get(set);
  if (!elems) sets.set(set, (elems = new Map()));
  const known = elems.get(key);
  if (known) known.after = after;
  else elems.set(key, { before, after });
}

/**
 * The transaction for a delta, `current` being the ruleset after it. Element changes become
 * deletes and adds (a changed element is both); changes that cancel out vanish. A table that
 * gained a chain whose rules use an existing typeof map is replaced whole (see replaceReason).
 */
export function deltaTransaction(delta: RulesetDelta, current: Ruleset): Diff {
  const stats = emptyStats();
  const commands: Command[] = [];
  const tables = new Set([...delta.elements.keys(), ...delta.chainsAdded.keys()]);
  for (const key of tables) {
    const t = current.tables.get(key);
    if (!t) continue;
    const newChains = [...(delta.chainsAdded.get(key) ?? [])].filter((name) => t.chains.has(name));
    const typeofUse = newChains.find((name) =>
      [...setRefs(t.chains.get(name)!.rules)].some((ref) => t.sets.get(ref)?.def.typeof),
    );
    if (typeofUse !== undefined) {
      stats.replaceReasons.push(`${key}: new rule in ${typeofUse} refers to a typeof map (nft 1.0.6)`);
      commands.push({ add: { table: t.table } }, { delete: { table: t.table } }, ...createTable(t, stats));
      continue;
    }
    const addChains: Command[] = [];
    const addRules: Command[] = [];
    for (const name of newChains) {
      const c = t.chains.get(name)!;
      addChains.push({ add: { chain: c.chain } });
      for (const expr of c.rules)
        addRules.push({ add: { rule: { family: c.chain.family, table: c.chain.table, chain: name, expr } } });
      stats.chainsAdded++;
    }
    const dels: Command[] = [];
    const adds: Command[] = [];
    for (const [setName, changes] of delta.elements.get(key) ?? []) {
      const s = t.sets.get(setName);
      if (!s) continue;
      const del: Elem[] = [];
      const add: Elem[] = [];
      for (const { before, after } of changes.values()) {
        if (before !== undefined && after !== undefined && irEqual(before, after)) continue;
        if (before !== undefined) del.push(before);
        if (after !== undefined) add.push(after);
      }
      if (del.length) dels.push(elementCmd('delete', s, del));
      if (add.length) adds.push(elementCmd('add', s, add));
      stats.elementsDeleted += del.length;
      stats.elementsAdded += add.length;
    }
    commands.push(...addChains, ...addRules, ...dels, ...adds);
  }
  return { tx: { commands }, stats };
}
