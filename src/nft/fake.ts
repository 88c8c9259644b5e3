/**
 * An in-memory nftables that behaves like the kernel where nftproxy depends on it:
 * transactions are atomic (applied to a copy, swapped in only on success), and the
 * commands fail as the kernel's do (missing objects, conflicting map elements, chains
 * still referenced, values of the wrong datatype).
 */
import type { Chain, Command, Elem, Expr, Family, NftSet, Stmt, Transaction } from './ir.js';
import { type ApplyStages, type ApplyStats, type NftBackend, type NftReader, unwatched } from './backend.js';
import { describeIR, type TableDescription } from './diff.js';
import { NftError, NftErrorKind } from './errors.js';
import { renderTransaction } from './render.js';
import {
  type ChainState,
  cloneRuleset,
  cloneTable,
  elemKey,
  elemKeyExpr,
  emptyRuleset,
  exprKey,
  emptyTable,
  irEqual,
  type Ruleset,
  type SetState,
  type TableState,
  tableKey,
} from './ruleset.js';
import { parseCIDR, parseIP } from '../net/ip.js';
import { eachLine, elemLine, lineElem, lineKeyExpr } from './lines.js';

/** Decides whether an apply fails; used by tests to inject failures. */
export type FailureInjector = (tx: Transaction, applyCount: number) => NftError | undefined;

/** In-memory backend. */
export class FakeBackend implements NftBackend, NftReader {
  readonly name = 'fake';
  readonly describe = describeIR;

  /**
   * `typeofRulesNeedNewTable`: behave like nft 1.0.6 (the default), which must replace a
   * table to add a rule using an existing typeof map, or like the netlink backend.
   */
  constructor(
    readonly typeofRulesNeedNewTable = true,
    /** Sets larger than this are rewritten, not read, in a full sync (as the netlink backend does). */
    readonly readLimit = Infinity,
  ) {}

  private state: Ruleset = emptyRuleset();
  /** Every transaction passed to `apply`, successful or not. */
  readonly applied: Transaction[] = [];
  /** Set to make `apply` fail. */
  injectFailure: FailureInjector | undefined;

  async apply(tx: Transaction, stages: ApplyStages = unwatched): Promise<ApplyStats> {
    this.applied.push(tx);
    // Rendered like the exec backend's, for the byte count and the same stages.
    const script = tx.commands.length ? await stages.encode(() => renderTransaction(tx)) : '';
    const bytes = Buffer.byteLength(script);
    await stages.send(bytes, () => {
      const injected = this.injectFailure?.(tx, this.applied.length);
      if (injected) throw injected;
      const next = cloneRuleset(this.state);
      for (const c of tx.commands) applyCommand(next, c);
      this.state = next;
    });
    return { bytes };
  }

  async describeTable(family: Family, table: string): Promise<TableDescription | undefined> {
    const t = this.state.tables.get(tableKey(family, table));
    if (!t) return undefined;
    const d = describeIR(t);
    for (const [name, s] of t.sets) d.sets.get(name)!.count = s.elems.size;
    return d;
  }

  async listElements(family: Family, table: string, set: string): Promise<string[] | undefined> {
    const st = this.state.tables.get(tableKey(family, table))?.sets.get(set);
    return st && [...st.elems.values()].map(elemLine);
  }

  async listTable(family: Family, name: string): Promise<TableState | undefined> {
    const t = this.state.tables.get(tableKey(family, name));
    return t && cloneTable(t);
  }

  async listChain(family: Family, table: string, chain: string): Promise<ChainState | undefined> {
    const c = this.state.tables.get(tableKey(family, table))?.chains.get(chain);
    return c && { chain: { ...c.chain }, rules: [...c.rules] };
  }

  async listSet(family: Family, table: string, set: string): Promise<SetState | undefined> {
    const st = this.state.tables.get(tableKey(family, table))?.sets.get(set);
    return st && { def: { ...st.def }, elems: new Map(st.elems) };
  }

  /** Deletes a table outside any transaction, as an administrator would (drift tests). */
  dropTable(family: Family, name: string): void {
    this.state.tables.delete(tableKey(family, name));
  }

  /** The whole current state (a copy). */
  snapshot(): Ruleset {
    return cloneRuleset(this.state);
  }
}

function fail(kind: NftErrorKind, message: string): never {
  throw new NftError(kind, message);
}

function getTable(r: Ruleset, family: Family, name: string): TableState {
  return r.tables.get(tableKey(family, name)) ?? fail(NftErrorKind.NotFound, `no table ${family} ${name}`);
}

function applyCommand(r: Ruleset, c: Command): void {
  if ('add' in c) {
    const o = c.add;
    if ('table' in o) {
      const k = tableKey(o.table.family, o.table.name);
      if (!r.tables.has(k)) r.tables.set(k, emptyTable(o.table));
    } else if ('chain' in o) {
      addChain(getTable(r, o.chain.family, o.chain.table), o.chain);
    } else if ('rule' in o) {
      const t = getTable(r, o.rule.family, o.rule.table);
      const chain = t.chains.get(o.rule.chain) ?? fail(NftErrorKind.NotFound, `no chain ${o.rule.chain}`);
      checkRule(t, o.rule.expr);
      chain.rules.push(o.rule.expr);
    } else if ('set' in o || 'map' in o) {
      const s = 'set' in o ? o.set : o.map;
      addSet(getTable(r, s.family, s.table), s);
    } else {
      const t = getTable(r, o.element.family, o.element.table);
      const s = t.sets.get(o.element.name) ?? fail(NftErrorKind.NotFound, `no set ${o.element.name}`);
      for (const line of eachLine(o.element.lines)) {
        const e = lineElem(s.def, line);
        checkElem(t, s.def, e);
        checkNoOverlap(s, e);
        const k = elemKey(e);
        const old = s.elems.get(k);
        if (old !== undefined && !irEqual(old, e)) {
          fail(NftErrorKind.Exists, `element ${k} of ${s.def.name} exists with other data`);
        }
        s.elems.set(k, e);
      }
    }
  } else if ('delete' in c) {
    const o = c.delete;
    if ('table' in o) {
      const k = tableKey(o.table.family, o.table.name);
      if (!r.tables.delete(k)) fail(NftErrorKind.NotFound, `no table ${k}`);
    } else if ('chain' in o) {
      const t = getTable(r, o.chain.family, o.chain.table);
      if (!t.chains.has(o.chain.name)) fail(NftErrorKind.NotFound, `no chain ${o.chain.name}`);
      if (chainReferenced(t, o.chain.name)) fail(NftErrorKind.Busy, `chain ${o.chain.name} is in use`);
      t.chains.delete(o.chain.name);
    } else if ('set' in o || 'map' in o) {
      const s = 'set' in o ? o.set : o.map;
      const t = getTable(r, s.family, s.table);
      if (!t.sets.has(s.name)) fail(NftErrorKind.NotFound, `no set ${s.name}`);
      if (setReferenced(t, s.name)) fail(NftErrorKind.Busy, `set ${s.name} is in use`);
      t.sets.delete(s.name);
    } else if ('element' in o) {
      const t = getTable(r, o.element.family, o.element.table);
      const s = t.sets.get(o.element.name) ?? fail(NftErrorKind.NotFound, `no set ${o.element.name}`);
      for (const line of eachLine(o.element.lines)) {
        const k = exprKey(lineKeyExpr(s.def, line));
        if (!s.elems.delete(k)) fail(NftErrorKind.NotFound, `no element ${k} in ${s.def.name}`);
      }
    } else {
      fail(NftErrorKind.Invalid, 'cannot delete a rule without its handle');
    }
  } else {
    const o = c.flush;
    if ('chain' in o) {
      const t = getTable(r, o.chain.family, o.chain.table);
      const chain = t.chains.get(o.chain.name) ?? fail(NftErrorKind.NotFound, `no chain ${o.chain.name}`);
      chain.rules = [];
    } else if ('set' in o || 'map' in o) {
      const s = 'set' in o ? o.set : o.map;
      const set =
        getTable(r, s.family, s.table).sets.get(s.name) ?? fail(NftErrorKind.NotFound, `no set ${s.name}`);
      set.elems.clear();
    } else if ('table' in o) {
      for (const chain of getTable(r, o.table.family, o.table.name).chains.values()) chain.rules = [];
    } else {
      fail(NftErrorKind.Invalid, 'unsupported flush');
    }
  }
}

function addChain(t: TableState, c: Chain): void {
  const old = t.chains.get(c.name);
  if (!old) {
    t.chains.set(c.name, { chain: c, rules: [] });
  } else if (old.chain.hook !== c.hook || old.chain.type !== c.type || old.chain.prio !== c.prio) {
    fail(NftErrorKind.Exists, `chain ${c.name} exists with another definition`);
  }
}

function addSet(t: TableState, s: NftSet): void {
  const { elem, ...def } = s;
  const old = t.sets.get(s.name);
  if (old) {
    const sig = (d: Omit<NftSet, 'elem'>) => JSON.stringify([d.type, d.map, d.flags ?? []]);
    if (sig(old.def) !== sig(def)) fail(NftErrorKind.Exists, `set ${s.name} exists with another type`);
  } else {
    t.sets.set(s.name, { def, elems: new Map() });
  }
  const set = t.sets.get(s.name)!;
  for (const e of elem ?? []) {
    checkElem(t, def, e);
    checkNoOverlap(set, e);
    set.elems.set(elemKey(e), e);
  }
}

/** Walks every expression (and sub-expression) of a statement list or expression. */
function* walk(x: unknown): Generator<unknown> {
  yield x;
  if (Array.isArray(x)) for (const v of x) yield* walk(v);
  else if (typeof x === 'object' && x !== null) for (const v of Object.values(x)) yield* walk(v);
}

function verdictTarget(x: unknown): string | undefined {
  if (typeof x !== 'object' || x === null) return undefined;
  const v = x as { jump?: { target: string }; goto?: { target: string } };
  return v.jump?.target ?? v.goto?.target;
}

function checkRule(t: TableState, expr: Stmt[]): void {
  for (const x of walk(expr)) {
    if (typeof x === 'string' && x.startsWith('@') && !t.sets.has(x.slice(1))) {
      fail(NftErrorKind.NotFound, `rule refers to missing set ${x}`);
    }
    const target = verdictTarget(x);
    if (target !== undefined && !t.chains.has(target)) fail(NftErrorKind.NotFound, `no chain ${target}`);
  }
}

function chainReferenced(t: TableState, name: string): boolean {
  for (const c of t.chains.values()) {
    for (const x of walk(c.rules)) if (verdictTarget(x) === name) return true;
  }
  for (const s of t.sets.values()) {
    if (s.def.map !== 'verdict') continue;
    for (const e of s.elems.values()) if (Array.isArray(e) && verdictTarget(e[1]) === name) return true;
  }
  return false;
}

function setReferenced(t: TableState, name: string): boolean {
  for (const c of t.chains.values()) for (const x of walk(c.rules)) if (x === `@${name}`) return true;
  return false;
}

const PROTOCOLS = new Set(['tcp', 'udp', 'sctp', 'icmp', 'icmpv6']);

function isUint(v: Expr, max: number): boolean {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= max;
}

/** Whether `v` is a valid value of one datatype, as the kernel would check on input. */
function fieldOk(t: TableState, type: string, v: Expr, interval: boolean): boolean {
  if (interval && typeof v === 'object' && v !== null) {
    if ('prefix' in v)
      return fieldOk(t, type, v.prefix.addr, false) && isUint(v.prefix.len, type === 'ipv4_addr' ? 32 : 128);
    if ('range' in v) return fieldOk(t, type, v.range[0], false) && fieldOk(t, type, v.range[1], false);
  }
  switch (type) {
    case 'ipv4_addr':
    case 'ipv6_addr':
      return typeof v === 'string' && parseIP(v)?.version === (type === 'ipv4_addr' ? 4 : 6);
    case 'inet_proto':
      return (typeof v === 'string' && PROTOCOLS.has(v)) || isUint(v, 255);
    case 'inet_service':
      return isUint(v, 65535);
    case 'integer':
    case 'mark':
      return isUint(v, 0xffffffff);
    case 'verdict': {
      const target = verdictTarget(v);
      if (target !== undefined) return t.chains.has(target);
      return typeof v === 'object' && v !== null && ('accept' in v || 'drop' in v || 'return' in v);
    }
    default:
      return false;
  }
}

function valueOk(t: TableState, type: string | string[], v: Expr, interval: boolean): boolean {
  if (!Array.isArray(type)) {
    if (type.includes(' . ')) return valueOk(t, type.split(' . '), v, interval);
    return fieldOk(t, type, v, interval);
  }
  if (type.length === 1) return valueOk(t, type[0]!, v, interval);
  if (typeof v !== 'object' || v === null || !('concat' in v) || v.concat.length !== type.length)
    return false;
  return v.concat.every((part, i) => fieldOk(t, type[i]!, part, interval && i === type.length - 1));
}

/** An address, prefix or range as inclusive numeric bounds. */
function bounds(e: Expr): [bigint, bigint] | undefined {
  const num = (bytes: Uint8Array) => bytes.reduce((acc, b) => (acc << 8n) | BigInt(b), 0n);
  if (typeof e === 'string') {
    const ip = parseIP(e);
    return ip && [num(ip.bytes), num(ip.bytes)];
  }
  if (typeof e === 'object' && e !== null && 'prefix' in e) {
    const c = parseCIDR(`${e.prefix.addr}/${e.prefix.len}`);
    if (!c) return undefined;
    const hostBits = BigInt(c.bytes.length * 8 - c.len);
    const lo = num(c.bytes);
    return [lo, lo + (1n << hostBits) - 1n];
  }
  if (typeof e === 'object' && e !== null && 'range' in e) {
    const [lo, hi] = e.range.map((x) => bounds(x)?.[0]);
    return lo === undefined || hi === undefined ? undefined : [lo, hi];
  }
  return undefined;
}

/**
 * The kernel refuses an element of a (single-field) interval set that overlaps another
 * ("conflicting intervals specified"); an identical element is fine.
 */
function checkNoOverlap(s: { def: Omit<NftSet, 'elem'>; elems: Map<string, Elem> }, e: Elem): void {
  if (!s.def.flags?.includes('interval') || Array.isArray(s.def.type) || s.elems.has(elemKey(e))) return;
  const b = bounds(elemKeyExpr(e));
  if (!b) return;
  for (const other of s.elems.values()) {
    const o = bounds(elemKeyExpr(other));
    if (o && b[0] <= o[1] && o[0] <= b[1]) {
      fail(
        NftErrorKind.Exists,
        `${JSON.stringify(elemKeyExpr(e))} overlaps ${JSON.stringify(elemKeyExpr(other))} in interval set ${s.def.name}`,
      );
    }
  }
}

function checkElem(t: TableState, def: Omit<NftSet, 'elem'>, e: Elem): void {
  const interval = def.flags?.includes('interval') ?? false;
  const isMap = def.map !== undefined;
  if (isMap !== Array.isArray(e))
    fail(NftErrorKind.Invalid, `element ${JSON.stringify(e)} does not fit ${def.name}`);
  if (!valueOk(t, def.type, elemKeyExpr(e), interval)) {
    fail(
      NftErrorKind.Invalid,
      `key ${JSON.stringify(elemKeyExpr(e))} is not of type ${JSON.stringify(def.type)} in ${def.name}`,
    );
  }
  if (Array.isArray(e) && !valueOk(t, def.map!, e[1], false)) {
    const kind = def.map === 'verdict' ? NftErrorKind.NotFound : NftErrorKind.Invalid;
    fail(kind, `data ${JSON.stringify(e[1])} is not of type ${JSON.stringify(def.map)} in ${def.name}`);
  }
}
