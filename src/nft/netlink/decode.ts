/**
 * Reading nf_tables objects back: element dumps into element lines, and chains, rules and
 * set declarations into comparable keys.
 *
 * A key is a canonical string of what an object means to the kernel: the attributes that
 * decide behaviour, with the kernel's defaults filled in and bookkeeping (handles, use
 * counts, batch ids, counter values) left out. The same function reads the bytes the
 * encoder wrote and the bytes the kernel dumps, so "the kernel has what we want" is string
 * equality. The kernel writes nested attributes without the NESTED flag, so nesting comes
 * from the schema below, not from the flag.
 */
import { type Attr, attrMap, attrStr, attrU32, parseAttrs } from './attr.js';
import {
  ChainAttr,
  DataAttr,
  ExprAttr,
  HookAttr,
  LIST_ELEM,
  NFT_DATA_VERDICT,
  SET_ELEM_INTERVAL_END,
  SetAttr,
  SetDescAttr,
  SetElemAttr,
  SetElemListAttr,
  SetFieldAttr,
  VerdictAttr,
} from './constants.js';
import { intervalText, readTextFields, type SetSpec, specOfKernel, verdictText } from './datatypes.js';

const hex = (a: Attr | undefined) => (a ? a.data.toString('hex') : '');
const hexU32 = (n: number) => n.toString(16).padStart(8, '0');

/** A DATA nest (NFTA_DATA_VALUE or NFTA_DATA_VERDICT) as a canonical string. */
function dataKey(a: Attr | undefined): string {
  if (!a) return '';
  const m = attrMap(a.data);
  const v = m.get(DataAttr.VALUE);
  if (v) return `v${v.data.toString('hex')}`;
  const verdict = m.get(DataAttr.VERDICT);
  if (verdict) {
    const vm = attrMap(verdict.data);
    return `verdict ${attrU32(vm.get(VerdictAttr.CODE)) ?? ''} ${attrStr(vm.get(VerdictAttr.CHAIN)) ?? ''}`;
  }
  return '';
}

/**
 * Per expression: which attributes are DATA nests, which are ignored (ids of sets in the
 * batch, counters' values), and the defaults the kernel reports when we sent nothing.
 */
const EXPR_SCHEMA: Record<string, { data?: number[]; ignore?: number[]; defaults?: Record<number, string> }> =
  {
    cmp: { data: [3] },
    bitwise: { data: [4, 5, 7], defaults: { 6: '00000000' } },
    immediate: { data: [2] },
    lookup: { ignore: [4], defaults: { 5: '00000000' } },
    dynset: { ignore: [2, 7, 10], defaults: { 9: '00000000' } },
    counter: { ignore: [1, 2] },
    masq: { defaults: { 1: '00000000' } },
    nat: {},
    hash: { defaults: { 6: '00000000' } },
    numgen: {},
  };

/** One expression (a LIST_ELEM of NFTA_RULE_EXPRESSIONS) as a canonical string. */
function exprKey(el: Attr): string {
  const m = attrMap(el.data);
  const name = attrStr(m.get(ExprAttr.NAME)) ?? '?';
  const schema = EXPR_SCHEMA[name] ?? {};
  const attrs = new Map<number, string>();
  for (const a of parseAttrs(m.get(ExprAttr.DATA)?.data ?? Buffer.alloc(0))) {
    if (schema.ignore?.includes(a.type)) continue;
    attrs.set(a.type, schema.data?.includes(a.type) ? dataKey(a) : a.data.toString('hex'));
  }
  for (const [t, v] of Object.entries(schema.defaults ?? {}))
    if (!attrs.has(Number(t))) attrs.set(Number(t), v);
  if (name === 'nat') {
    // The kernel keeps max = min when only min is given, reports both, and reports the
    // range flags it derives from them (NF_NAT_RANGE_MAP_IPS, _PROTO_SPECIFIED).
    if (!attrs.has(7)) attrs.set(7, hexU32((attrs.has(3) ? 1 : 0) | (attrs.has(5) ? 2 : 0)));
    if (attrs.has(3) && !attrs.has(4)) attrs.set(4, attrs.get(3)!);
    if (attrs.has(5) && !attrs.has(6)) attrs.set(6, attrs.get(5)!);
  }
  // A TCP reset has no ICMP code; the kernel does not report the one nft sends.
  if (name === 'reject' && attrs.get(1) === '00000001') attrs.delete(2);
  const parts = [...attrs].sort(([a], [b]) => a - b).map(([t, v]) => `${t}=${v}`);
  return `${name}(${parts.join(' ')})`;
}

/** A rule's expressions (the NFTA_RULE_EXPRESSIONS payload) as a canonical string. */
export function ruleKey(expressions: Buffer): string {
  return parseAttrs(expressions)
    .filter((a) => a.type === LIST_ELEM)
    .map(exprKey)
    .join(' ');
}

/** A chain's definition as a canonical string: base chains by type, hook, priority, policy. */
export function chainKey(attrs: Map<number, Attr>): string {
  const hook = attrs.get(ChainAttr.HOOK);
  if (!hook) return 'regular';
  const h = attrMap(hook.data);
  return [
    `type=${attrStr(attrs.get(ChainAttr.TYPE))}`,
    `hook=${attrU32(h.get(HookAttr.HOOKNUM))}`,
    `prio=${h.get(HookAttr.PRIORITY)?.data.readInt32BE(0)}`,
    `policy=${attrU32(attrs.get(ChainAttr.POLICY)) ?? 1}`,
  ].join(' ');
}

/** A set declaration as a canonical string: layout, flags, size, userdata, element statements. */
export function setKey(attrs: Map<number, Attr>): string {
  const desc = attrs.get(SetAttr.DESC);
  let size = '';
  let concat = '';
  if (desc) {
    const d = attrMap(desc.data);
    size = String(attrU32(d.get(SetDescAttr.SIZE)) ?? '');
    const c = d.get(SetDescAttr.CONCAT);
    if (c) {
      concat = parseAttrs(c.data)
        .map((f) => String(attrU32(attrMap(f.data).get(SetFieldAttr.LEN))))
        .join(',');
    }
  }
  const dataType = attrU32(attrs.get(SetAttr.DATA_TYPE));
  const exprs: string[] = [];
  const one = attrs.get(SetAttr.EXPR);
  if (one) exprs.push(attrStr(attrMap(one.data).get(ExprAttr.NAME)) ?? '?');
  const many = attrs.get(SetAttr.EXPRESSIONS);
  if (many)
    for (const e of parseAttrs(many.data)) exprs.push(attrStr(attrMap(e.data).get(ExprAttr.NAME)) ?? '?');
  return [
    `flags=${attrU32(attrs.get(SetAttr.FLAGS)) ?? 0}`,
    `key=${attrU32(attrs.get(SetAttr.KEY_TYPE))}/${attrU32(attrs.get(SetAttr.KEY_LEN))}`,
    // A verdict map's data length is the kernel's business (it reports its own struct size).
    `data=${dataType ?? ''}/${dataType === NFT_DATA_VERDICT ? '' : (attrU32(attrs.get(SetAttr.DATA_LEN)) ?? '')}`,
    `size=${size}`,
    `concat=${concat}`,
    `udata=${hex(attrs.get(SetAttr.USERDATA))}`,
    `expr=${exprs.join(',')}`,
  ].join(' ');
}

/** The layout of a set from its dumped (or encoded) attributes. */
export function specOfSetAttrs(attrs: Map<number, Attr>): SetSpec {
  const dataType = attrU32(attrs.get(SetAttr.DATA_TYPE));
  const dataLen = attrU32(attrs.get(SetAttr.DATA_LEN));
  return specOfKernel({
    name: attrStr(attrs.get(SetAttr.NAME)) ?? '',
    flags: attrU32(attrs.get(SetAttr.FLAGS)) ?? 0,
    keyType: attrU32(attrs.get(SetAttr.KEY_TYPE)) ?? 0,
    keyLen: attrU32(attrs.get(SetAttr.KEY_LEN)) ?? 0,
    ...(dataType !== undefined ? { dataType } : {}),
    ...(dataLen !== undefined ? { dataLen } : {}),
  });
}

const u16 = (b: Buffer, p: number) => b[p]! | (b[p + 1]! << 8);

/** Where the payload of attribute `type` lies within `b[start, end)`: [start, end], or undefined. */
function find(b: Buffer, start: number, end: number, type: number): [number, number] | undefined {
  for (let p = start; p + 4 <= end;) {
    const len = u16(b, p);
    if (len < 4) return undefined;
    if ((u16(b, p + 2) & 0x3fff) === type) return [p + 4, p + len];
    p += (len + 3) & ~3;
  }
  return undefined;
}

/** A NUL-terminated string in `b[start, end)`. */
function cstr(b: Buffer, start: number, end: number): string {
  let nul = start;
  while (nul < end && b[nul] !== 0) nul++;
  return b.toString('utf8', start, nul);
}

/** The VALUE payload inside a DATA nest at `[start, end)`. */
function valueIn(b: Buffer, range: [number, number] | undefined): [number, number] | undefined {
  return range && find(b, range[0], range[1], DataAttr.VALUE);
}

/**
 * The elements of a set dump (NEWSETELEM payloads) as element lines. Read in place, without
 * an object per attribute: a dump of a large map is hundreds of thousands of elements.
 */
export function elementLines(spec: SetSpec, payloads: Buffer[], counters?: Map<string, number>): string[] {
  const out: string[] = [];
  const rb: { key: Buffer; end: boolean; open: boolean }[] = [];
  const rbtree = spec.interval && spec.key.fields.length === 1;
  for (const b of payloads) {
    const list = find(b, 0, b.length, SetElemListAttr.ELEMENTS);
    if (!list) continue;
    for (let p = list[0]; p + 4 <= list[1];) {
      const len = u16(b, p);
      if (len < 4) break;
      const es = p + 4;
      const ee = p + len;
      p += (len + 3) & ~3;
      const key = valueIn(b, find(b, es, ee, SetElemAttr.KEY));
      if (!key) continue;
      if (rbtree) {
        const f = find(b, es, ee, SetElemAttr.FLAGS);
        const flags = f ? b.readUInt32BE(f[0]) : 0;
        const ud = find(b, es, ee, SetElemAttr.USERDATA);
        const open = !!ud && ud[1] - ud[0] >= 6 && b[ud[0]] === 1 && b[ud[0] + 2] === 1;
        rb.push({ key: b.subarray(key[0], key[1]), end: (flags & SET_ELEM_INTERVAL_END) !== 0, open });
        continue;
      }
      let keyText: string;
      if (spec.interval) {
        const keyEnd = valueIn(b, find(b, es, ee, SetElemAttr.KEY_END)) ?? key;
        const start = b.subarray(key[0], key[1]);
        const last = b.subarray(keyEnd[0], keyEnd[1]);
        keyText = spec.key.fields
          .map((f, i) => intervalText(f, start, last, spec.key.offsets[i]!))
          .join(' . ');
      } else {
        keyText = readTextFields(spec.key, b, key[0]);
      }
      if (!(spec.verdict || spec.data)) {
        out.push(keyText);
        continue;
      }
      const data = find(b, es, ee, SetElemAttr.DATA);
      if (!data) {
        out.push(keyText);
        continue;
      }
      const verdict = find(b, data[0], data[1], DataAttr.VERDICT);
      if (verdict) {
        const code = find(b, verdict[0], verdict[1], VerdictAttr.CODE);
        const chain = find(b, verdict[0], verdict[1], VerdictAttr.CHAIN);
        const name = chain ? cstr(b, chain[0], chain[1]) : undefined;
        out.push(`${keyText} : ${verdictText(code ? b.readUInt32BE(code[0]) : 0, name)}`);
        continue;
      }
      const v = find(b, data[0], data[1], DataAttr.VALUE);
      const line = v && spec.data ? `${keyText} : ${readTextFields(spec.data, b, v[0])}` : keyText;
      out.push(line);
      if (counters) {
        const packets = counterPackets(b, es, ee);
        if (packets !== undefined) counters.set(line, packets);
      }
    }
  }
  if (rbtree) out.push(...rbtreeLines(spec, rb));
  return out;
}

/**
 * The packet count of an element's counter (NFTA_SET_ELEM_EXPR, or the first counter in
 * NFTA_SET_ELEM_EXPRESSIONS), if it has one.
 */
function counterPackets(b: Buffer, es: number, ee: number): number | undefined {
  const one = (range: [number, number] | undefined): number | undefined => {
    if (!range) return undefined;
    const name = find(b, range[0], range[1], ExprAttr.NAME);
    if (!name || cstr(b, name[0], name[1]) !== 'counter') return undefined;
    const data = find(b, range[0], range[1], ExprAttr.DATA);
    const packets = data && find(b, data[0], data[1], COUNTER_PACKETS);
    return packets ? Number(b.readBigUInt64BE(packets[0])) : undefined;
  };
  const single = one(find(b, es, ee, SetElemAttr.EXPR));
  if (single !== undefined) return single;
  const list = find(b, es, ee, SetElemAttr.EXPRESSIONS);
  if (!list) return undefined;
  for (let p = list[0]; p + 4 <= list[1];) {
    const len = u16(b, p);
    if (len < 4) break;
    const got = one([p + 4, p + len]);
    if (got !== undefined) return got;
    p += (len + 3) & ~3;
  }
  return undefined;
}

/** NFTA_COUNTER_PACKETS, inside a counter expression's data. */
const COUNTER_PACKETS = 2;

/** Intervals of an rbtree set from its start and end elements, as lines. */
function rbtreeLines(spec: SetSpec, items: { key: Buffer; end: boolean; open: boolean }[]): string[] {
  const t = spec.key.fields[0]!;
  // Ascending; at equal keys an end (of the interval before) comes before a start.
  items.sort((a, b) => Buffer.compare(a.key, b.key) || (a.end === b.end ? 0 : a.end ? -1 : 1));
  const out: string[] = [];
  for (let i = 0; i < items.length; i++) {
    const s = items[i]!;
    if (s.end) continue; // the zero end element, or a stray end
    const next = items[i + 1];
    let last: Buffer;
    if (next?.end) {
      last = decrement(next.key);
      i++;
    } else if (s.open || !next) {
      last = Buffer.alloc(t.len, 0xff);
    } else {
      last = s.key; // a single value followed by another start
    }
    out.push(intervalText(t, s.key, last, 0));
  }
  return out;
}

function decrement(b: Buffer): Buffer {
  const out = Buffer.from(b);
  for (let i = out.length - 1; i >= 0; i--) {
    if (out[i] !== 0) {
      out[i]!--;
      return out;
    }
    out[i] = 0xff;
  }
  return out;
}
