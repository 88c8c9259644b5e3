/**
 * A whole nftables state as nftproxy reasons about it: tables holding chains (with their
 * rules) and sets/maps (with their elements, keyed for O(1) diffing). The compiler builds
 * one, the diff compares two, the backends store and read them, the tracer walks them.
 */
import type { Chain, Elem, Expr, Family, ListObject, NftSet, Rule, Stmt, Table } from './ir.js';
import { NftError } from './errors.js';
import { parseAffinityUpdate, renderTableBlock, type TableBlock } from './render.js';

/** A chain and its rules, in order. */
export interface ChainState {
  chain: Chain;
  rules: Stmt[][];
}

/** A set or map declaration (without `elem`) and its elements by key. */
export interface SetState {
  def: Omit<NftSet, 'elem'>;
  elems: Map<string, Elem>;
  /**
   * Element counters as the kernel listed them (sets declared with a `counter`), by element
   * key. Read by `nftproxy status`; never part of comparisons or diffs.
   */
  counters?: Map<string, ElemCounter>;
}

/** A per-element counter. */
export interface ElemCounter {
  packets: number;
  bytes: number;
}

/** One table's contents. Maps keep insertion order, which is the rendering order. */
export interface TableState {
  table: Table;
  chains: Map<string, ChainState>;
  sets: Map<string, SetState>;
}

/** All tables, keyed by `tableKey`. */
export interface Ruleset {
  tables: Map<string, TableState>;
}

/** The key of a table in `Ruleset.tables`: `ip nftproxy`. */
export function tableKey(family: Family, name: string): string {
  return `${family} ${name}`;
}

/**
 * A canonical string for an expression, cheap for the common shapes (literals and
 * concatenations of them). Literals never contain spaces or `#` (render.ts refuses them),
 * so `a . b`, `#80` (a number) and `{...}` (other objects, as JSON) cannot collide.
 */
export function exprKey(e: Expr): string {
  if (typeof e === 'string') return e;
  if (typeof e === 'number') return `#${e}`;
  if ('concat' in e) {
    let out = '';
    for (let i = 0; i < e.concat.length; i++) out += (i ? ' . ' : '') + exprKey(e.concat[i]!);
    return out;
  }
  return JSON.stringify(e);
}

/** The identity of an element within its set: its key, canonically serialised. */
export function elemKey(e: Elem): string {
  return exprKey(Array.isArray(e) ? e[0] : e);
}

/**
 * Structural equality of two plain values (IR elements and expressions, parsed objects),
 * without serialising. A key set to undefined counts as absent, as in JSON: objects built with
 * every field present and ones that leave unset fields out compare equal.
 */
export function irEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!irEqual(a[i], b[i])) return false;
    return true;
  }
  if (Array.isArray(b)) return false;
  const ra = a as Record<string, unknown>;
  const rb = b as Record<string, unknown>;
  const ka = Object.keys(ra);
  // The usual case, fast: the same keys (objects of one shape).
  if (ka.length === Object.keys(rb).length) {
    let sameKeys = true;
    for (const k of ka) {
      const vb = rb[k];
      if (vb === undefined && !(k in rb)) {
        sameKeys = false;
        break;
      }
      if (!irEqual(ra[k], vb)) return false;
    }
    if (sameKeys) return true;
  }
  let defined = 0;
  for (const k of ka) {
    if (ra[k] === undefined) continue;
    defined++;
    if (!irEqual(ra[k], rb[k])) return false;
  }
  for (const k of Object.keys(rb)) if (rb[k] !== undefined) defined--;
  return defined === 0;
}

/** The key expression of an element. */
export function elemKeyExpr(e: Elem): Expr {
  return Array.isArray(e) ? e[0] : e;
}

/** A new, empty ruleset. */
export function emptyRuleset(): Ruleset {
  return { tables: new Map() };
}

/** A new, empty table state. */
export function emptyTable(table: Table): TableState {
  return { table, chains: new Map(), sets: new Map() };
}

/** Deep copy. Elements are immutable values, so they are shared. */
export function cloneTable(t: TableState): TableState {
  return {
    table: { ...t.table },
    chains: new Map([...t.chains].map(([k, c]) => [k, { chain: { ...c.chain }, rules: [...c.rules] }])),
    sets: new Map([...t.sets].map(([k, s]) => [k, { def: { ...s.def }, elems: new Map(s.elems) }])),
  };
}

/** Deep copy of a ruleset. */
export function cloneRuleset(r: Ruleset): Ruleset {
  return { tables: new Map([...r.tables].map(([k, t]) => [k, cloneTable(t)])) };
}

/** The libnftables JSON listing of a table (what `nft -j list table` prints, minus handles). */
export function tableToJson(t: TableState): ListObject[] {
  const out: ListObject[] = [{ table: { ...t.table } }];
  for (const s of t.sets.values()) {
    const obj: NftSet = { ...s.def };
    if (s.elems.size) obj.elem = [...s.elems.values()];
    out.push(s.def.map === undefined ? { set: obj } : { map: obj });
  }
  for (const c of t.chains.values()) out.push({ chain: { ...c.chain } });
  for (const c of t.chains.values()) {
    for (const expr of c.rules) {
      out.push({ rule: { family: c.chain.family, table: c.chain.table, chain: c.chain.name, expr } });
    }
  }
  return out;
}

/** The JSON document for a ruleset: `{ nftables: [...] }`. */
export function rulesetToJson(r: Ruleset): { nftables: ListObject[] } {
  return { nftables: [...r.tables.values()].flatMap(tableToJson) };
}

type Loose = Record<string, unknown>;

function isObject(v: unknown): v is Loose {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Drops kernel-only fields (handles, counters' live values stay) so listings compare as IR. */
function stripHandle<T extends Loose>(o: T): T {
  const { handle: _h, ...rest } = o;
  return rest as T;
}

/**
 * Reads a libnftables JSON listing (from `nft -j list` or from `rulesetToJson`) into a
 * ruleset. Objects of other kinds (metainfo, counters) are ignored.
 */
export function rulesetFromJson(doc: unknown): Ruleset {
  if (!isObject(doc) || !Array.isArray(doc.nftables)) {
    throw NftError.invalid('not a libnftables JSON document: no "nftables" array');
  }
  const r = emptyRuleset();
  // A listing of a single chain or set has no table object: the table is implied.
  const table = (family: Family, name: string): TableState => {
    const k = tableKey(family, name);
    let t = r.tables.get(k);
    if (!t) r.tables.set(k, (t = emptyTable({ family, name })));
    return t;
  };
  for (const o of doc.nftables as unknown[]) {
    if (!isObject(o)) continue;
    if (isObject(o.table)) {
      const t = stripHandle(o.table) as unknown as Table;
      r.tables.set(tableKey(t.family, t.name), emptyTable(t));
    } else if (isObject(o.set) || isObject(o.map)) {
      const raw = stripHandle((o.set ?? o.map) as Loose) as unknown as NftSet;
      const { elem, ...def } = raw;
      const elems = new Map<string, Elem>();
      const counters = new Map<string, ElemCounter>();
      for (const e of elem ?? []) {
        const plain = unwrapElem(e);
        const k = elemKey(plain);
        elems.set(k, plain);
        const counter = elemCounter(e);
        if (counter) counters.set(k, counter);
      }
      table(def.family, def.table).sets.set(def.name, { def, elems, ...(counters.size ? { counters } : {}) });
    } else if (isObject(o.chain)) {
      const c = stripHandle(o.chain) as unknown as Chain;
      table(c.family, c.table).chains.set(c.name, { chain: c, rules: [] });
    } else if (isObject(o.rule)) {
      const rule = o.rule as unknown as Rule;
      const chain = table(rule.family, rule.table).chains.get(rule.chain);
      if (!chain) throw NftError.invalid(`JSON listing has a rule in unknown chain ${rule.chain}`);
      // nft 1.0.6 lists statements it has no JSON for as text; ours is the affinity update.
      chain.rules.push(
        rule.expr.map((st) => {
          if (typeof st !== 'string') return st;
          const u = parseAffinityUpdate(rule.family, st);
          return u ? { affinityUpdate: u } : st;
        }),
      );
    }
  }
  return r;
}

/**
 * Elements the kernel added to a dynamic set come listed as `{ elem: { val, timeout,
 * expires } }`; the IR keeps the value only.
 */
function unwrapElem(e: Elem): Elem {
  const un = (x: Expr): Expr =>
    isObject(x) && isObject((x as Loose).elem) ? (((x as Loose).elem as Loose).val as Expr) : x;
  return Array.isArray(e) ? [un(e[0]), e[1]] : un(e);
}

/** The counter of a listed element, `{ elem: { val, counter: { packets, bytes } } }`. */
function elemCounter(e: Elem): ElemCounter | undefined {
  const key = Array.isArray(e) ? e[0] : e;
  const c =
    isObject(key) && isObject((key as Loose).elem) ? ((key as Loose).elem as Loose).counter : undefined;
  if (!isObject(c)) return undefined;
  const { packets, bytes } = c as Loose;
  return typeof packets === 'number' && typeof bytes === 'number' ? { packets, bytes } : undefined;
}

/** Whether the kernel fills this set itself (`flags dynamic`): its elements are not ours to diff. */
export function isDynamic(s: SetState): boolean {
  return s.def.flags?.includes('dynamic') ?? false;
}

/**
 * A set declaration as the kernel can report it back: without `typeof` (our rendering hint;
 * the kernel lists datatypes) and without the `dynamic` flag (nft 1.0.6 lists it in text but
 * drops it from JSON), and with a concatenated map datatype as a list.
 */
export function comparableDef(s: SetState): SetState['def'] {
  const flags = s.def.flags?.filter((f) => f !== 'dynamic');
  // A concatenated map datatype comes back as one string, `ipv4_addr . inet_service`.
  const split = <T>(t: T): T | string[] => (typeof t === 'string' && t.includes(' . ') ? t.split(' . ') : t);
  const { typeof: _typeof, flags: _flags, map, ...rest } = s.def;
  return {
    ...rest,
    ...(flags?.length ? { flags } : {}),
    ...(map !== undefined ? { map: split(map) } : {}),
  } as SetState['def'];
}

/** A table as blocks for `renderTableBlock`. */
export function tableToBlock(t: TableState): TableBlock {
  return {
    table: t.table,
    sets: [...t.sets.values()].map((s) => ({ ...s.def, elem: [...s.elems.values()] })),
    chains: [...t.chains.values()].map((c) => ({
      chain: c.chain,
      rules: c.rules.map((expr) => ({
        family: c.chain.family,
        table: c.chain.table,
        chain: c.chain.name,
        expr,
      })),
    })),
  };
}

/**
 * A script that creates the ruleset's tables, or atomically replaces them if they exist:
 * `add table` (so the delete cannot fail), `delete table`, then the table in block syntax.
 */
export function renderRulesetScript(r: Ruleset): string {
  let out = '';
  for (const t of r.tables.values()) {
    out += `add table ${t.table.family} ${t.table.name}\ndelete table ${t.table.family} ${t.table.name}\n`;
  }
  for (const t of r.tables.values()) out += renderTableBlock(tableToBlock(t));
  return out;
}

/** A difference between two rulesets, for tests and `kernel matches IR` checks. */
export interface RulesetMismatch {
  where: string;
  expected: unknown;
  actual: unknown;
}

function canonical(v: unknown): string {
  return JSON.stringify(v, (_k, val: unknown) =>
    isObject(val) ? Object.fromEntries(Object.entries(val).sort(([a], [b]) => a.localeCompare(b))) : val,
  );
}

/**
 * Compares two rulesets as the kernel would hold them: same tables, chains (definition and
 * rules in order), set and map declarations (ignoring the `typeof` rendering hint) and
 * elements (in any order). Returns the mismatches; empty means equal.
 */
export function compareRulesets(expected: Ruleset, actual: Ruleset): RulesetMismatch[] {
  const out: RulesetMismatch[] = [];
  const keys = new Set([...expected.tables.keys(), ...actual.tables.keys()]);
  for (const k of keys) {
    const e = expected.tables.get(k);
    const a = actual.tables.get(k);
    if (!e || !a) {
      out.push({ where: `table ${k}`, expected: !!e, actual: !!a });
      continue;
    }
    for (const name of new Set([...e.chains.keys(), ...a.chains.keys()])) {
      const ec = e.chains.get(name);
      const ac = a.chains.get(name);
      if (canonical(ec?.chain) !== canonical(ac?.chain)) {
        out.push({ where: `${k} chain ${name}`, expected: ec?.chain, actual: ac?.chain });
      } else if (canonical(ec?.rules) !== canonical(ac?.rules)) {
        out.push({ where: `${k} chain ${name} rules`, expected: ec?.rules, actual: ac?.rules });
      }
    }
    for (const name of new Set([...e.sets.keys(), ...a.sets.keys()])) {
      const es = e.sets.get(name);
      const as = a.sets.get(name);
      const def = (s: SetState | undefined) => (s ? canonical(comparableDef(s)) : undefined);
      if (def(es) !== def(as)) {
        out.push({ where: `${k} set ${name}`, expected: es?.def, actual: as?.def });
        continue;
      }
      if ((es && isDynamic(es)) || (as && isDynamic(as))) continue;
      for (const ek of new Set([...(es?.elems.keys() ?? []), ...(as?.elems.keys() ?? [])])) {
        const ee = es?.elems.get(ek);
        const ae = as?.elems.get(ek);
        if (canonical(ee) !== canonical(ae)) {
          out.push({ where: `${k} set ${name} element ${ek}`, expected: ee, actual: ae });
        }
      }
    }
  }
  return out;
}
