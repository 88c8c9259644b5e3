/**
 * Renders the IR as nft(8) text, the input `nft -f -` gets.
 *
 * nft 1.0.6 cannot read our maps back as JSON (see ir.ts), so text is the write path. No
 * string reaches the output unchecked: literals, names and comments must fit a safe
 * alphabet, which keeps a hostile Service name or address from ever becoming nft syntax.
 */
import type {
  AffinityUpdate,
  Chain,
  Command,
  Elem,
  Expr,
  Family,
  NftSet,
  Rule,
  Stmt,
  Table,
  Transaction,
  TxObject,
} from './ir.js';
import { NftError } from './errors.js';

// Addresses, numbers, protocol and type names, keywords, `@set` references.
const SAFE_LITERAL = /^@?[A-Za-z0-9_.:-]+$/;
const SAFE_NAME = /^[A-Za-z][A-Za-z0-9_.-]*$/;
const SAFE_COMMENT = /^[A-Za-z0-9 _.,:/()=+@-]*$/;
const MAX_COMMENT = 128;

function literal(s: string): string {
  if (!SAFE_LITERAL.test(s)) throw NftError.invalid(`unsafe literal in nft input: ${JSON.stringify(s)}`);
  return s;
}

function name(s: string): string {
  if (!SAFE_NAME.test(s)) throw NftError.invalid(`unsafe name in nft input: ${JSON.stringify(s)}`);
  return s;
}

function comment(s: string): string {
  if (s.length > MAX_COMMENT || !SAFE_COMMENT.test(s)) {
    throw NftError.invalid(`unsafe comment in nft input: ${JSON.stringify(s)}`);
  }
  return `"${s}"`;
}

/** An interface name (`cbr0`) or prefix (`veth*`), quoted. */
function ifname(s: string): string {
  if (!IFNAME.test(s)) throw NftError.invalid(`not an interface name or prefix: ${JSON.stringify(s)}`);
  return `"${s}"`;
}

/** Up to 15 characters (IFNAMSIZ 16 with the NUL), `*` last for a prefix. */
export const IFNAME = /^(?=[^*]{1,15}\*?$)[A-Za-z0-9_.:@-]+\*?$/;

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

/** Renders one expression. */
export function renderExpr(e: Expr): string {
  if (typeof e === 'string') return literal(e);
  if (typeof e === 'number') {
    if (!Number.isInteger(e) || e < 0) throw NftError.invalid(`not a non-negative integer: ${e}`);
    return String(e);
  }
  if ('payload' in e) return `${literal(e.payload.protocol)} ${literal(e.payload.field)}`;
  if ('meta' in e) return `meta ${literal(e.meta.key)}`;
  if ('ct' in e) {
    const parts = ['ct'];
    if (e.ct.dir) parts.push(e.ct.dir);
    if (e.ct.family) parts.push(e.ct.family);
    // Keys like `ip daddr` (original direction) are two words.
    parts.push(...e.ct.key.split(' ').map(literal));
    return parts.join(' ');
  }
  if ('fib' in e) return `fib ${e.fib.flags.map(literal).join(' . ')} ${literal(e.fib.result)}`;
  if ('concat' in e) return e.concat.map(renderExpr).join(' . ');
  if ('prefix' in e) return `${literal(e.prefix.addr)}/${renderExpr(e.prefix.len)}`;
  if ('range' in e) return `${renderExpr(e.range[0])}-${renderExpr(e.range[1])}`;
  if ('set' in e) return `{ ${e.set.map(renderExpr).join(', ')} }`;
  if ('numgen' in e) {
    const { mode, mod, offset } = e.numgen;
    return `numgen ${mode} mod ${renderExpr(mod)}${offset ? ` offset ${renderExpr(offset)}` : ''}`;
  }
  if ('jhash' in e) {
    const { expr, mod, seed, offset } = e.jhash;
    let s = `jhash ${renderExpr(expr)} mod ${renderExpr(mod)}`;
    if (seed !== undefined) s += ` seed ${hex(seed)}`;
    if (offset) s += ` offset ${renderExpr(offset)}`;
    return s;
  }
  if ('&' in e) return `${renderExpr(e['&'][0])} & ${renderExpr(e['&'][1])}`;
  if ('|' in e) return `${renderExpr(e['|'][0])} | ${renderExpr(e['|'][1])}`;
  if ('^' in e) return `${renderExpr(e['^'][0])} ^ ${renderExpr(e['^'][1])}`;
  if ('map' in e) return `${renderExpr(e.map.key)} map ${renderExpr(e.map.data)}`;
  if ('jump' in e) return `jump ${name(e.jump.target)}`;
  if ('goto' in e) return `goto ${name(e.goto.target)}`;
  if ('accept' in e) return 'accept';
  if ('drop' in e) return 'drop';
  if ('return' in e) return 'return';
  if ('continue' in e) return 'continue';
  throw NftError.invalid(`cannot render expression ${JSON.stringify(e)}`);
}

/** Renders one statement. */
export function renderStmt(s: Stmt): string {
  if ('match' in s) {
    const { op, left, right } = s.match;
    const l = renderExpr(left);
    const names = typeof left === 'object' && 'meta' in left && left.meta.key === 'iifname';
    const r = names && typeof right === 'string' ? ifname(right) : renderExpr(right);
    // `==` and the flag test `in` are implicit in nft syntax; after a bitwise operation we
    // spell `==` out so the value is not read as part of the operation by people.
    const bitwise = typeof left === 'object' && ('&' in left || '|' in left || '^' in left);
    if (op === 'in' || (op === '==' && !bitwise)) return `${l} ${r}`;
    return `${l} ${op} ${r}`;
  }
  if ('vmap' in s) return `${renderExpr(s.vmap.key)} vmap ${renderExpr(s.vmap.data)}`;
  if ('counter' in s) return 'counter';
  if ('mangle' in s) return `${renderExpr(s.mangle.key)} set ${renderExpr(s.mangle.value)}`;
  if ('dnat' in s) {
    const { family, addr, port } = s.dnat;
    let out = 'dnat';
    if (family) out += ` ${family}`;
    out += ' to';
    if (addr !== undefined) out += ` ${renderExpr(addr)}`;
    if (port !== undefined) out += `:${renderExpr(port)}`;
    return out;
  }
  if ('masquerade' in s) {
    const flags = s.masquerade?.flags;
    const list = flags === undefined ? [] : Array.isArray(flags) ? flags : [flags];
    return ['masquerade', ...list.map(literal)].join(' ');
  }
  if ('reject' in s) {
    const r = s.reject;
    if (!r || !r.type) return 'reject';
    if (r.type === 'tcp reset') return 'reject with tcp reset';
    return `reject with ${literal(r.type)} type ${literal(r.expr ?? 'port-unreachable')}`;
  }
  if ('affinityUpdate' in s) return renderAffinityUpdate(s.affinityUpdate);
  return renderExpr(s);
}

/** Seconds as nft lists a duration: `3h`, `1m30s`, `1d`. */
export function nftDuration(seconds: number): string {
  if (!Number.isInteger(seconds) || seconds <= 0) throw NftError.invalid(`not a valid timeout: ${seconds}`);
  const units: [string, number][] = [
    ['d', 86400],
    ['h', 3600],
    ['m', 60],
    ['s', 1],
  ];
  let rest = seconds;
  let out = '';
  for (const [u, n] of units) {
    const q = Math.floor(rest / n);
    rest -= q * n;
    if (q) out += `${q}${u}`;
  }
  return out;
}

function renderAffinityUpdate(u: AffinityUpdate): string {
  const l3 = u.family === 'ip6' ? 'ip6' : 'ip';
  const key = `${l3} saddr . ct original ${l3} daddr . meta l4proto . ct original proto-dst`;
  return (
    `meta l4proto ${literal(u.protocol)} update @${name(u.map)} ` +
    `{ ${key} timeout ${nftDuration(u.timeout)} : ${l3} daddr . th dport }`
  );
}

/**
 * Reads the text nft 1.0.6 lists for an affinity update (it has no JSON form) back into the
 * IR statement; undefined for any other text.
 */
export function parseAffinityUpdate(family: Family, text: string): AffinityUpdate | undefined {
  const m =
    /^update @([A-Za-z][A-Za-z0-9_.-]*) \{ (ip6?) saddr \. ct original \2 daddr \. meta l4proto \. ct original proto-dst timeout ((?:\d+[dhms])+) : \2 daddr \. (tcp|udp|sctp) dport \}$/.exec(
      text,
    );
  if (!m || (m[2] === 'ip6') !== (family === 'ip6')) return undefined;
  let timeout = 0;
  for (const [, n, u] of m[3]!.matchAll(/(\d+)([dhms])/g)) {
    timeout += Number(n) * { d: 86400, h: 3600, m: 60, s: 1 }[u as 'd' | 'h' | 'm' | 's'];
  }
  return { family, map: m[1]!, protocol: m[4] as AffinityUpdate['protocol'], timeout };
}

/** Renders an element: a set key, or `key : data` for a map. */
export function renderElem(e: Elem): string {
  if (Array.isArray(e)) return `${renderExpr(e[0])} : ${renderExpr(e[1])}`;
  return renderExpr(e);
}

function datatypes(t: string | string[]): string {
  return (Array.isArray(t) ? t : [t]).map(literal).join(' . ');
}

/** The body of a set or map declaration, one clause per entry. */
function setClauses(s: NftSet): string[] {
  const clauses: string[] = [];
  if (s.typeof) {
    const data = s.typeof.data === undefined ? '' : ` : ${renderExpr(s.typeof.data)}`;
    clauses.push(`typeof ${renderExpr(s.typeof.key)}${data}`);
  } else {
    clauses.push(`type ${datatypes(s.type)}${s.map === undefined ? '' : ` : ${datatypes(s.map)}`}`);
  }
  if (s.flags?.length) clauses.push(`flags ${s.flags.map(literal).join(', ')}`);
  if (s.size !== undefined) clauses.push(`size ${renderExpr(s.size)}`);
  for (const st of s.stmt ?? []) clauses.push(renderStmt(st));
  if (s.comment) clauses.push(`comment ${comment(s.comment)}`);
  return clauses;
}

function chainClauses(c: Chain): string[] {
  const clauses: string[] = [];
  if (c.type && c.hook) {
    clauses.push(`type ${c.type} hook ${c.hook} priority ${c.prio ?? 0}; policy ${c.policy ?? 'accept'};`);
  }
  if (c.comment) clauses.push(`comment ${comment(c.comment)}`);
  return clauses;
}

function ruleText(r: Rule): string {
  const body = r.expr.map(renderStmt).join(' ');
  return r.comment ? `${body} comment ${comment(r.comment)}` : body;
}

function tableId(t: { family: string; table: string }): string {
  return `${literal(t.family)} ${name(t.table)}`;
}

function objectText(o: TxObject, keysOnly: boolean): string {
  if ('table' in o) {
    const t: Table = o.table;
    const body = !keysOnly && t.comment ? ` { comment ${comment(t.comment)}; }` : '';
    return `table ${literal(t.family)} ${name(t.name)}${body}`;
  }
  if ('chain' in o) {
    const clauses = chainClauses(o.chain);
    const body = clauses.length ? ` { ${clauses.join(' ')} }` : '';
    return `chain ${tableId(o.chain)} ${name(o.chain.name)}${body}`;
  }
  if ('rule' in o) return `rule ${tableId(o.rule)} ${name(o.rule.chain)} ${ruleText(o.rule)}`;
  if ('set' in o || 'map' in o) {
    const s = 'set' in o ? o.set : o.map;
    const kind = 'set' in o ? 'set' : 'map';
    if (keysOnly) return `${kind} ${tableId(s)} ${name(s.name)}`;
    return `${kind} ${tableId(s)} ${name(s.name)} { ${setClauses(s).join('; ')}; }`;
  }
  const el = o.element;
  return `element ${literal(el.family)} ${name(el.table)} ${name(el.name)} { ${elementList(el.lines, keysOnly)} }`;
}

// An element line: literals, ` . `, ` : `, prefixes, ranges and a verdict with its chain.
const SAFE_LINES = /^[A-Za-z0-9_.:/ \n-]*$/;

/**
 * Element lines as an nft element list, `a, b, c`. Only the key of a map element when
 * `keysOnly` (nft deletes map elements by key). Lines are refused unless every character is
 * one an element line can hold, so no line can end the list or start another command.
 */
export function elementList(lines: readonly string[], keysOnly: boolean): string {
  const parts: string[] = [];
  for (const block of lines) {
    if (!SAFE_LINES.test(block))
      throw NftError.invalid(`unsafe element in nft input: ${JSON.stringify(block.slice(0, 200))}`);
    for (const line of block.split('\n')) {
      if (!line) continue;
      if (!keysOnly) parts.push(line);
      else {
        const colon = line.indexOf(' : ');
        parts.push(colon < 0 ? line : line.slice(0, colon));
      }
    }
  }
  return parts.join(', ');
}

/** Renders one command as one line of nft input. */
export function renderCommand(c: Command): string {
  if ('add' in c) return `add ${objectText(c.add, false)}`;
  // nft takes only the key of a map element to delete it.
  if ('delete' in c) return `delete ${objectText(c.delete, true)}`;
  return `flush ${objectText(c.flush, true)}`;
}

/** Renders a transaction as an nft script: one command per line, applied atomically. */
export function renderTransaction(tx: Transaction): string {
  let out = '';
  for (const c of tx.commands) out += renderCommand(c) + '\n';
  return out;
}

/** A table's contents in the block syntax of `nft list table`, for people to read. */
export interface TableBlock {
  table: Table;
  sets: NftSet[];
  chains: { chain: Chain; rules: Rule[] }[];
}

/** Renders a table in block syntax (what `nft list table` shows, and loadable as such). */
export function renderTableBlock(b: TableBlock): string {
  const lines: string[] = [`table ${literal(b.table.family)} ${name(b.table.name)} {`];
  if (b.table.comment) lines.push(`\tcomment ${comment(b.table.comment)}`);
  for (const s of b.sets) {
    lines.push('', `\t${s.map === undefined ? 'set' : 'map'} ${name(s.name)} {`);
    for (const c of setClauses(s)) lines.push(`\t\t${c}`);
    if (s.elem?.length) {
      lines.push(`\t\telements = {`);
      s.elem.forEach((e, i) => lines.push(`\t\t\t${renderElem(e)}${i + 1 < s.elem!.length ? ',' : ''}`));
      lines.push(`\t\t}`);
    }
    lines.push('\t}');
  }
  for (const { chain, rules } of b.chains) {
    lines.push('', `\tchain ${name(chain.name)} {`);
    for (const c of chainClauses(chain)) lines.push(`\t\t${c}`);
    for (const r of rules) lines.push(`\t\t${ruleText(r)}`);
    lines.push('\t}');
  }
  lines.push('}');
  return lines.join('\n') + '\n';
}
