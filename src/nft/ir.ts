/**
 * The nftables intermediate representation: plain objects shaped exactly like the
 * libnftables JSON that `nft -j list table` prints (see libnftables-json(5)).
 *
 * Everything nftproxy generates is written in the canonical form nft 1.0.6 lists back, so a
 * ruleset read from the kernel compares equal to the one we built, and the tracer runs on
 * either. The one extension is `typeof` on sets and maps: nft lists a `typeof` map as its
 * plain datatypes, which nft cannot parse back for keys ending in `numgen`, so the text
 * renderer needs the original expressions.
 */

/** Address family of a table. nftproxy uses one `ip` and one `ip6` table. */
export type Family = 'ip' | 'ip6';

/** A packet header field: `ip daddr`, `th dport`. */
export interface PayloadExpr {
  payload: { protocol: string; field: string };
}
/** Packet metadata: `meta l4proto`, `meta mark`. */
export interface MetaExpr {
  meta: { key: string };
}
/** Conntrack state: `ct state`, `ct status`, `ct original ip daddr`. */
export interface CtExpr {
  ct: { key: string; dir?: 'original' | 'reply'; family?: Family };
}
/** Routing lookup: `fib daddr type`. */
export interface FibExpr {
  fib: { result: 'type' | 'oif' | 'oifname'; flags: string[] };
}
/** Fields joined with `.`. */
export interface ConcatExpr {
  concat: Expr[];
}
/** An address prefix `10.0.0.0/8`. */
export interface PrefixExpr {
  prefix: { addr: string; len: number };
}
/** An inclusive range `a-b`. */
export interface RangeExpr {
  range: [Expr, Expr];
}
/** An anonymous set literal `{ a, b }`. */
export interface SetLiteralExpr {
  set: Expr[];
}
/** A number generator: `numgen random mod 4`. */
export interface NumgenExpr {
  numgen: { mode: 'random' | 'inc'; mod: number; offset: number };
}
/** A hash: `jhash ip saddr mod 4 seed 0x1`. */
export interface JhashExpr {
  jhash: { mod: number; offset?: number; seed?: number; expr: Expr };
}
/** Bitwise operations: `meta mark & 0x4000`. */
export type BinaryExpr = { '&': [Expr, Expr] } | { '|': [Expr, Expr] } | { '^': [Expr, Expr] };
/** A map lookup used as a value: `KEY map @name`. */
export interface MapLookupExpr {
  map: { key: Expr; data: Expr };
}
/** Verdicts, as statements in rules and as data in verdict maps. */
export type Verdict =
  | { accept: null }
  | { drop: null }
  | { continue: null }
  | { return: null }
  | { jump: { target: string } }
  | { goto: { target: string } };

/**
 * An expression. Literal strings are addresses, protocol and type names, set references
 * (`@name`) and keywords; the renderers refuse any string outside a safe alphabet.
 */
export type Expr =
  | string
  | number
  | PayloadExpr
  | MetaExpr
  | CtExpr
  | FibExpr
  | ConcatExpr
  | PrefixExpr
  | RangeExpr
  | SetLiteralExpr
  | NumgenExpr
  | JhashExpr
  | BinaryExpr
  | MapLookupExpr
  | Verdict;

/** Comparison operators as libnftables writes them; `in` is the implicit flag test. */
export type MatchOp = '==' | '!=' | 'in' | '<' | '>' | '<=' | '>=';

/** A rule statement. */
export type Stmt =
  | { match: { op: MatchOp; left: Expr; right: Expr } }
  | { vmap: { key: Expr; data: Expr } }
  | { counter: null | { packets: number; bytes: number } }
  | { mangle: { key: Expr; value: Expr } }
  | { dnat: { family?: Family; addr?: Expr; port?: Expr } }
  | { masquerade: null | { flags?: string | string[] } }
  | { reject: null | { type?: string; expr?: string } }
  | { affinityUpdate: AffinityUpdate }
  | Verdict;

/**
 * Records which endpoint a new connection got, in a dynamic map keyed by
 * `client . original destination . proto . original port`, expiring after `timeout` seconds:
 * `meta l4proto tcp update @affinity { ip saddr . ct original ip daddr . meta l4proto .
 * ct original proto-dst timeout 10800s : ip daddr . th dport }`.
 *
 * nft 1.0.6 has no JSON for a map update: it lists the statement as a text string (with the
 * protocol dependency folded into `tcp dport`), which `rulesetFromJson` reads back into this
 * shape. The protocol is part of the statement because `ct original proto-dst` has no type
 * without it.
 */
export interface AffinityUpdate {
  family: Family;
  map: string;
  protocol: 'tcp' | 'udp' | 'sctp';
  /** Seconds. */
  timeout: number;
}

/** A table. */
export interface Table {
  family: Family;
  name: string;
  comment?: string;
}

/** A chain; base chains have type, hook, prio and policy. */
export interface Chain {
  family: Family;
  table: string;
  name: string;
  type?: 'filter' | 'nat';
  hook?: 'prerouting' | 'input' | 'forward' | 'output' | 'postrouting';
  prio?: number;
  policy?: 'accept' | 'drop';
  comment?: string;
}

/** A rule. `handle` is only present on rules read from the kernel. */
export interface Rule {
  family: Family;
  table: string;
  chain: string;
  expr: Stmt[];
  comment?: string;
  handle?: number;
}

/** Key or data of a set/map declaration in `typeof` form (nftproxy extension, see above). */
export interface TypeofSpec {
  key: Expr;
  data?: Expr;
}

/** An element of a set (the key) or of a map (`[key, data]`). */
export type SetElem = Expr;
export type MapElem = [Expr, Expr];
export type Elem = SetElem | MapElem;

/**
 * A named set, or a map when `map` is present. `type` and `map` are datatype names, a single
 * name or one per concatenated field, as nft lists them.
 */
export interface NftSet {
  family: Family;
  table: string;
  name: string;
  type: string | string[];
  map?: string | string[];
  typeof?: TypeofSpec;
  flags?: string[];
  size?: number;
  comment?: string;
  /** Statements every element gets, e.g. `[{ counter: null }]`: a counter per element. */
  stmt?: Stmt[];
  elem?: Elem[];
}

/** One object of a libnftables JSON listing. */
export type ListObject =
  { table: Table } | { chain: Chain } | { rule: Rule } | { set: NftSet } | { map: NftSet };

/**
 * Elements of a named set or map in a transaction, each as one line of the canonical nft
 * text that `nft list` prints and `nft -f` reads: `10.96.0.10 . tcp . 80 : goto pick-random-2`
 * (see `renderElem`). Lines are the desired state's own form: the text backend sends them as
 * they are, the netlink backend encodes them by the set's datatypes.
 */
export interface Elements {
  family: Family;
  table: string;
  name: string;
  /** One element per line; an entry may hold several lines joined by `\n`. */
  lines: string[];
}

/** An object a transaction command acts on: a listing object, or elements. */
export type TxObject = ListObject | { element: Elements };

/**
 * A command of a transaction. `flush` of a chain empties it of rules, of a set or map
 * removes all its elements.
 */
export type Command = { add: TxObject } | { delete: TxObject } | { flush: TxObject };

/** An ordered list of commands that nft applies atomically, all or nothing. */
export interface Transaction {
  commands: Command[];
}

// ---------------------------------------------------------------------------------------
// Builders: short names so the compiler reads close to nft syntax.

/** `PROTOCOL FIELD`, e.g. `payload('ip', 'daddr')`. */
export const payload = (protocol: string, field: string): PayloadExpr => ({ payload: { protocol, field } });
/** `meta KEY`. */
export const meta = (key: string): MetaExpr => ({ meta: { key } });
/** `ct KEY`. */
export const ct = (key: string): CtExpr => ({ ct: { key } });
/** `fib daddr type`. */
export const fibDaddrType = (): FibExpr => ({ fib: { result: 'type', flags: ['daddr'] } });
/** `fib saddr type`: `local` for packets the node itself sends. */
export const fibSaddrType = (): FibExpr => ({ fib: { result: 'type', flags: ['saddr'] } });
/** `ct original KEY`, e.g. `ct original ip daddr`, `ct original proto-dst`. */
export const ctOriginal = (key: string): CtExpr => ({ ct: { key, dir: 'original' } });
/** `numgen inc mod N offset O`. */
export const numgenInc = (mod: number, offset = 0): NumgenExpr => ({ numgen: { mode: 'inc', mod, offset } });
/** `jhash EXPR mod N seed S offset O`. */
export const jhash = (expr: Expr, mod: number, seed: number, offset = 0): JhashExpr => ({
  jhash: { mod, seed, expr, ...(offset ? { offset } : {}) },
});
/** `a . b . c`. */
export const concat = (...parts: Expr[]): ConcatExpr => ({ concat: parts });
/** `ADDR/LEN`. */
export const prefix = (addr: string, len: number): PrefixExpr => ({ prefix: { addr, len } });
/** `numgen random mod N`. */
export const numgenRandom = (mod: number, offset = 0): NumgenExpr => ({
  numgen: { mode: 'random', mod, offset },
});
/** `@name`: a reference to a named set or map. */
export const setRef = (name: string): string => `@${name}`;
/** `LEFT OP RIGHT`. */
export const match = (left: Expr, op: MatchOp, right: Expr): Stmt => ({ match: { op, left, right } });
/** `KEY vmap @name`. */
export const vmap = (key: Expr, mapName: string): Stmt => ({ vmap: { key, data: setRef(mapName) } });
/** `jump CHAIN`. */
export const jump = (target: string): Verdict => ({ jump: { target } });
/** `goto CHAIN`. */
export const goto = (target: string): Verdict => ({ goto: { target } });
/** `return`. */
export const ret = (): Verdict => ({ return: null });
