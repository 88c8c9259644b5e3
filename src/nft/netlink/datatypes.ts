/**
 * Set keys and data as bytes: the datatypes nftproxy's sets use, a set's key and data layout
 * (from its declaration, or from what the kernel reports), and element lines, the canonical
 * nft text of one element (`10.96.0.10 . tcp . 80 . 0 : 10.244.1.10 . 8080`), to and from
 * the bytes of NFTA_SET_ELEM_KEY / KEY_END / DATA.
 *
 * Concatenated keys put each field in its own 32-bit register, so every field is padded to a
 * multiple of 4 bytes. Numbers are big-endian, except `integer` fields filled from `numgen`
 * or `jhash` and marks, which the kernel compares in host byte order.
 */
import { formatIP } from '../../net/ip.js';
import type { Expr, NftSet } from '../ir.js';
import { NftError } from '../errors.js';
import { NFT_DATA_VERDICT, SetFlag } from './constants.js';

/** nft's byte orders (as stored in set userdata). */
export const ByteOrder = { invalid: 0, host: 1, big: 2 } as const;
export type ByteOrder = (typeof ByteOrder)[keyof typeof ByteOrder];

/** A datatype: nft's numeric id, value length in bytes, byte order. */
export interface Datatype {
  name: string;
  id: number;
  /** Bytes of a value. */
  len: number;
  order: ByteOrder;
}

/** The datatypes nftproxy's sets and maps use, by nft name. */
export const DATATYPES: Record<string, Datatype> = {
  integer: { name: 'integer', id: 4, len: 4, order: ByteOrder.host },
  ipv4_addr: { name: 'ipv4_addr', id: 7, len: 4, order: ByteOrder.big },
  ipv6_addr: { name: 'ipv6_addr', id: 8, len: 16, order: ByteOrder.big },
  inet_proto: { name: 'inet_proto', id: 12, len: 1, order: ByteOrder.big },
  inet_service: { name: 'inet_service', id: 13, len: 2, order: ByteOrder.big },
  mark: { name: 'mark', id: 19, len: 4, order: ByteOrder.host },
};

const BY_ID = new Map(Object.values(DATATYPES).map((d) => [d.id, d]));

/** nft's TYPE_BITS: a concatenated type is its fields' ids, 6 bits each. */
const TYPE_BITS = 6;

/** Protocol numbers by name, for `inet_proto` fields (nft prints these names). */
const PROTO_NUMBERS: Record<string, number> = { icmp: 1, tcp: 6, udp: 17, icmpv6: 58, sctp: 132 };
const PROTO_NAMES = new Map(Object.entries(PROTO_NUMBERS).map(([n, v]) => [v, n]));

/** A key or data layout: the fields, their types and byte lengths. */
export interface Layout {
  fields: Datatype[];
  /** The datatype id nf_tables stores (concatenated ids for several fields). */
  type: number;
  /** Total length in bytes, fields padded to 4 bytes when concatenated. */
  len: number;
  /** Byte offset of each field. */
  offsets: number[];
}

/** How a set's elements look as bytes. */
export interface SetSpec {
  name: string;
  flags: number;
  key: Layout;
  /** Map data; absent for plain sets. */
  data?: Layout;
  /** A verdict map. */
  verdict: boolean;
  /** Intervals: rbtree for one field (start and end elements), pipapo when concatenated. */
  interval: boolean;
}

const round4 = (n: number) => (n + 3) & ~3;

/** A layout of these datatypes. */
export function layoutOf(fields: Datatype[]): Layout {
  let type = 0;
  for (const f of fields) type = (type << TYPE_BITS) | f.id;
  const len = fields.length === 1 ? fields[0]!.len : fields.reduce((n, f) => n + round4(f.len), 0);
  const offsets: number[] = [];
  let at = 0;
  for (const f of fields) {
    offsets.push(at);
    at += round4(f.len);
  }
  return { fields, type: type >>> 0, len, offsets };
}

function datatype(name: string): Datatype {
  const d = DATATYPES[name];
  if (!d) throw NftError.invalid(`datatype ${name} is not supported by the netlink backend`);
  return d;
}

/** The datatype of a typeof expression: `ip daddr`, `meta l4proto`, `th dport`, `numgen ...`. */
export function typeofDatatype(e: Expr): Datatype {
  if (typeof e === 'object' && e !== null) {
    if ('payload' in e) {
      const { protocol, field } = e.payload;
      if (field === 'saddr' || field === 'daddr')
        return datatype(protocol === 'ip6' ? 'ipv6_addr' : 'ipv4_addr');
      if (field === 'sport' || field === 'dport') return datatype('inet_service');
    }
    if ('meta' in e && e.meta.key === 'l4proto') return datatype('inet_proto');
    if ('meta' in e && e.meta.key === 'mark') return datatype('mark');
    if ('numgen' in e || 'jhash' in e) return datatype('integer');
  }
  throw NftError.invalid(`typeof expression ${JSON.stringify(e)} is not supported by the netlink backend`);
}

const names = (t: string | string[]): string[] =>
  Array.isArray(t) ? t : t.includes(' . ') ? t.split(' . ') : [t];

/** The layout of a set declaration, as the kernel will hold it. */
export function specOfDef(def: Omit<NftSet, 'elem'>): SetSpec {
  const key = layoutOf(
    def.typeof ? concatParts(def.typeof.key).map(typeofDatatype) : names(def.type).map(datatype),
  );
  let flags = 0;
  const interval = def.flags?.includes('interval') ?? false;
  if (interval) flags |= SetFlag.INTERVAL;
  if (interval && key.fields.length > 1) flags |= SetFlag.CONCAT;
  if (def.flags?.includes('timeout')) flags |= SetFlag.TIMEOUT;
  if (def.flags?.includes('dynamic')) flags |= SetFlag.EVAL;
  if (def.flags?.includes('constant')) flags |= SetFlag.CONSTANT;
  const spec: SetSpec = { name: def.name, flags, key, verdict: false, interval };
  if (def.map !== undefined) {
    spec.flags |= SetFlag.MAP;
    if (def.map === 'verdict') {
      spec.verdict = true;
    } else {
      const fields = def.typeof?.data
        ? concatParts(def.typeof.data).map(typeofDatatype)
        : names(def.map).map(datatype);
      spec.data = layoutOf(fields);
    }
  }
  return spec;
}

/** The parts of a concatenation, or the expression alone. */
export function concatParts(e: Expr): Expr[] {
  return typeof e === 'object' && e !== null && 'concat' in e ? e.concat : [e];
}

/**
 * The layout of a set as the kernel reports it (NFTA_SET_KEY_TYPE, KEY_LEN, the concat field
 * lengths, DATA_TYPE, DATA_LEN): how to read its elements without knowing its declaration.
 */
export function specOfKernel(s: {
  name: string;
  flags: number;
  keyType: number;
  keyLen: number;
  dataType?: number;
  dataLen?: number;
}): SetSpec {
  const fieldsOf = (type: number, len: number): Layout => {
    const ids: number[] = [];
    for (let t = type; t; t = Math.floor(t / (1 << TYPE_BITS))) ids.unshift(t & ((1 << TYPE_BITS) - 1));
    const fields = ids.map((id) => {
      const d = BY_ID.get(id);
      if (!d) throw NftError.invalid(`set ${s.name}: datatype ${id} is not supported by the netlink backend`);
      return d;
    });
    const layout = layoutOf(fields);
    if (layout.len !== len)
      throw NftError.invalid(`set ${s.name}: key length ${len} does not fit its datatypes`);
    return layout;
  };
  const spec: SetSpec = {
    name: s.name,
    flags: s.flags,
    key: fieldsOf(s.keyType, s.keyLen),
    verdict: false,
    interval: (s.flags & SetFlag.INTERVAL) !== 0,
  };
  if (s.flags & SetFlag.MAP) {
    if (s.dataType === NFT_DATA_VERDICT) spec.verdict = true;
    else if (s.dataType !== undefined) spec.data = fieldsOf(s.dataType, s.dataLen ?? 0);
  }
  return spec;
}

// ---------------------------------------------------------------------------------------
// Values: text <-> bytes.

function bad(what: string, text: string): NftError {
  return NftError.invalid(`not a valid ${what} in an element: ${JSON.stringify(text)}`);
}

function parseV4Into(s: string, out: Uint8Array, at: number): void {
  let part = 0;
  let digits = 0;
  let n = 0;
  for (let i = 0; i <= s.length; i++) {
    const ch = i < s.length ? s.charCodeAt(i) : 46;
    if (ch === 46) {
      if (!digits || n > 255 || part > 3) throw bad('IPv4 address', s);
      out[at + part++] = n;
      n = 0;
      digits = 0;
    } else if (ch >= 48 && ch <= 57) {
      n = n * 10 + (ch - 48);
      digits++;
    } else throw bad('IPv4 address', s);
  }
  if (part !== 4) throw bad('IPv4 address', s);
}

function parseV6Into(s: string, out: Uint8Array, at: number): void {
  const halves = s.split('::');
  if (halves.length > 2) throw bad('IPv6 address', s);
  const words = (part: string): number[] => {
    if (part === '') return [];
    return part.split(':').map((g) => {
      if (!/^[0-9a-f]{1,4}$/i.test(g)) throw bad('IPv6 address', s);
      return parseInt(g, 16);
    });
  };
  const head = words(halves[0]!);
  const tail = halves.length === 2 ? words(halves[1]!) : [];
  const zeros = 8 - head.length - tail.length;
  if ((halves.length === 1 && zeros !== 0) || zeros < 0) throw bad('IPv6 address', s);
  const all = [...head, ...new Array<number>(zeros).fill(0), ...tail];
  for (let i = 0; i < 8; i++) {
    out[at + 2 * i] = all[i]! >> 8;
    out[at + 2 * i + 1] = all[i]! & 0xff;
  }
}

function parseUint(s: string, max: number): number {
  if (!/^\d+$/.test(s)) throw bad('number', s);
  const n = Number(s);
  if (n > max) throw bad('number', s);
  return n;
}

/** Writes one value of `t` from its text into `out` at `at` (len bytes). */
export function writeValue(t: Datatype, text: string, out: Uint8Array, at: number): void {
  switch (t.id) {
    case 7:
      return parseV4Into(text, out, at);
    case 8:
      if (text.includes('.')) throw bad('IPv6 address', text); // nft never prints an IPv4 tail for ours
      return parseV6Into(text, out, at);
    case 12: {
      const n = PROTO_NUMBERS[text] ?? parseUint(text, 255);
      out[at] = n;
      return;
    }
    case 13: {
      const n = parseUint(text, 0xffff);
      out[at] = n >> 8;
      out[at + 1] = n & 0xff;
      return;
    }
    default: {
      // integer, mark: host byte order (little-endian).
      const n = parseUint(text, 0xffffffff);
      out[at] = n & 0xff;
      out[at + 1] = (n >>> 8) & 0xff;
      out[at + 2] = (n >>> 16) & 0xff;
      out[at + 3] = n >>> 24;
    }
  }
}

/** The text of one value of `t` in `b` at `at`, as nft prints it. */
export function readValue(t: Datatype, b: Uint8Array, at: number): string {
  switch (t.id) {
    case 7:
      return `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`;
    case 8:
      return formatIP({ version: 6, bytes: b.subarray(at, at + 16) });
    case 12:
      return PROTO_NAMES.get(b[at]!) ?? String(b[at]);
    case 13:
      return String((b[at]! << 8) | b[at + 1]!);
    default:
      return String((b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0);
  }
}

/** Offsets of each field of a layout within its bytes. */
export function fieldOffsets(l: Layout): number[] {
  return l.offsets;
}

/**
 * One field of an interval key as start and end (inclusive): `a`, `a/len` or `a-b`.
 * Writes both into `start` and `end` at `at`.
 */
function writeIntervalValue(t: Datatype, text: string, start: Uint8Array, end: Uint8Array, at: number): void {
  const slash = text.indexOf('/');
  if (slash >= 0) {
    writeValue(t, text.slice(0, slash), start, at);
    const bits = t.len * 8;
    const len = parseUint(text.slice(slash + 1), bits);
    for (let i = 0; i < t.len; i++) {
      const keep = Math.max(0, Math.min(8, len - i * 8));
      const mask = keep === 8 ? 0xff : (0xff00 >> keep) & 0xff;
      start[at + i]! &= mask;
      end[at + i] = start[at + i]! | (~mask & 0xff);
    }
    return;
  }
  // A range `a-b`; IPv6 addresses never contain '-', and neither do our other types.
  const dash = text.indexOf('-');
  if (dash >= 0) {
    writeValue(t, text.slice(0, dash), start, at);
    writeValue(t, text.slice(dash + 1), end, at);
    return;
  }
  writeValue(t, text, start, at);
  for (let i = 0; i < t.len; i++) end[at + i] = start[at + i]!;
}

/** Splits an element line into its key fields and data text. */
export function splitLine(line: string): { key: string[]; data: string | undefined } {
  const colon = line.indexOf(' : ');
  const keyText = colon < 0 ? line : line.slice(0, colon);
  return { key: keyText.split(' . '), data: colon < 0 ? undefined : line.slice(colon + 3) };
}

/** The bytes of a key (or map data) from the text of its fields. */
export function encodeFields(l: Layout, texts: string[], what: string): Uint8Array {
  if (texts.length !== l.fields.length) throw bad(what, texts.join(' . '));
  const out = new Uint8Array(l.len);
  const offs = fieldOffsets(l);
  for (let i = 0; i < texts.length; i++) writeValue(l.fields[i]!, texts[i]!, out, offs[i]!);
  return out;
}

/** The start and end (inclusive) bytes of an interval key. */
export function encodeIntervalKey(l: Layout, texts: string[]): { start: Uint8Array; end: Uint8Array } {
  if (texts.length !== l.fields.length) throw bad('key', texts.join(' . '));
  const start = new Uint8Array(l.len);
  const end = new Uint8Array(l.len);
  const offs = fieldOffsets(l);
  for (let i = 0; i < texts.length; i++) writeIntervalValue(l.fields[i]!, texts[i]!, start, end, offs[i]!);
  return { start, end };
}

/** The text of a key or data from its bytes. */
export function decodeFields(l: Layout, b: Uint8Array): string {
  const offs = fieldOffsets(l);
  let out = '';
  for (let i = 0; i < l.fields.length; i++) out += (i ? ' . ' : '') + readValue(l.fields[i]!, b, offs[i]!);
  return out;
}

/**
 * The text of one interval field from its inclusive start and end: the value, `a/len` when
 * the interval is a prefix, else `a-b` (nft prints a full-length prefix as the address).
 */
export function intervalText(t: Datatype, start: Uint8Array, end: Uint8Array, at: number): string {
  let same = true;
  for (let i = 0; i < t.len; i++) if (start[at + i] !== end[at + i]) same = false;
  const a = readValue(t, start, at);
  if (same) return a;
  if (t.id === 7 || t.id === 8) {
    // A prefix: start has the host bits clear and end has them all set, from one bit on.
    let len = t.len * 8;
    while (len > 0) {
      const i = at + ((len - 1) >> 3);
      const bit = 0x80 >> ((len - 1) & 7);
      if ((start[i]! & bit) === 0 && (end[i]! & bit) !== 0) len--;
      else break;
    }
    let prefix = true;
    for (let bitIdx = 0; bitIdx < t.len * 8; bitIdx++) {
      const i = at + (bitIdx >> 3);
      const bit = 0x80 >> (bitIdx & 7);
      const s = (start[i]! & bit) !== 0;
      const e = (end[i]! & bit) !== 0;
      if (bitIdx < len ? s !== e : s || !e) prefix = false;
    }
    if (prefix) return `${a}/${len}`;
  }
  return `${a}-${readValue(t, end, at)}`;
}

/** A verdict as element data text: `goto pick-random-2`, `drop`. */
export function verdictText(code: number, chain: string | undefined): string {
  switch (code | 0) {
    case 0:
      return 'drop';
    case 1:
      return 'accept';
    case -1:
      return 'continue';
    case -3:
      return `jump ${chain}`;
    case -4:
      return `goto ${chain}`;
    case -5:
      return 'return';
    default:
      return `verdict ${code | 0}`;
  }
}

/** Parses verdict data text into its code and chain. */
export function parseVerdict(text: string): { code: number; chain?: string } {
  const sp = text.indexOf(' ');
  const word = sp < 0 ? text : text.slice(0, sp);
  const chain = sp < 0 ? undefined : text.slice(sp + 1);
  switch (word) {
    case 'drop':
      return { code: 0 };
    case 'accept':
      return { code: 1 };
    case 'continue':
      return { code: -1 };
    case 'return':
      return { code: -5 };
    case 'jump':
    case 'goto':
      if (!chain) throw bad('verdict', text);
      return { code: word === 'jump' ? -3 : -4, chain };
    default:
      throw bad('verdict', text);
  }
}

// ---------------------------------------------------------------------------------------
// The hot paths: hundreds of thousands of elements per full sync. No intermediate strings or
// arrays: text is read by index, bytes are written in place.

const SEP = ' . ';

/**
 * Writes the fields of `l` from `text[start, end)` (fields joined by ` . `) into `out` at
 * `at`, zero-padded; throws NftError for text that does not fit.
 */
export function writeTextFields(
  l: Layout,
  text: string,
  start: number,
  end: number,
  out: Uint8Array,
  at: number,
): void {
  out.fill(0, at, at + l.len);
  let pos = start;
  const n = l.fields.length;
  for (let i = 0; i < n; i++) {
    const stop = i + 1 < n ? text.indexOf(SEP, pos) : end;
    if (stop < 0 || stop > end) throw bad('element', text.slice(start, end));
    if (i + 1 === n && text.indexOf(SEP, pos) >= 0 && text.indexOf(SEP, pos) < end)
      throw bad('element', text.slice(start, end));
    writeFieldText(l.fields[i]!, text, pos, stop, out, at + l.offsets[i]!);
    pos = stop + SEP.length;
  }
}

/** One field from `text[start, end)`. */
function writeFieldText(
  t: Datatype,
  text: string,
  start: number,
  end: number,
  out: Uint8Array,
  at: number,
): void {
  switch (t.id) {
    case 7: {
      // IPv4: four decimal octets.
      let part = 0;
      let n = 0;
      let digits = 0;
      for (let i = start; i <= end; i++) {
        const ch = i < end ? text.charCodeAt(i) : 46;
        if (ch === 46) {
          if (!digits || n > 255 || part > 3) throw bad('IPv4 address', text.slice(start, end));
          out[at + part++] = n;
          n = 0;
          digits = 0;
        } else if (ch >= 48 && ch <= 57 && digits < 3) {
          n = n * 10 + ch - 48;
          digits++;
        } else throw bad('IPv4 address', text.slice(start, end));
      }
      if (part !== 4) throw bad('IPv4 address', text.slice(start, end));
      return;
    }
    case 13: {
      const v = uintAt(text, start, end, 0xffff);
      out[at] = v >> 8;
      out[at + 1] = v & 0xff;
      return;
    }
    case 12: {
      const c = text.charCodeAt(start);
      const len = end - start;
      // The names nft prints; anything else must be a number.
      if (len === 3 && c === 116 && text.startsWith('tcp', start)) out[at] = 6;
      else if (len === 3 && c === 117 && text.startsWith('udp', start)) out[at] = 17;
      else if (len === 4 && c === 115 && text.startsWith('sctp', start)) out[at] = 132;
      else writeValue(t, text.slice(start, end), out, at);
      return;
    }
    case 4:
    case 19: {
      const v = uintAt(text, start, end, 0xffffffff);
      out[at] = v & 0xff;
      out[at + 1] = (v >>> 8) & 0xff;
      out[at + 2] = (v >>> 16) & 0xff;
      out[at + 3] = v >>> 24;
      return;
    }
    default:
      writeValue(t, text.slice(start, end), out, at);
  }
}

function uintAt(text: string, start: number, end: number, max: number): number {
  if (start >= end || end - start > 10) throw bad('number', text.slice(start, end));
  let v = 0;
  for (let i = start; i < end; i++) {
    const ch = text.charCodeAt(i);
    if (ch < 48 || ch > 57) throw bad('number', text.slice(start, end));
    v = v * 10 + ch - 48;
  }
  if (v > max) throw bad('number', text.slice(start, end));
  return v;
}

/** The text of the fields of `l` in `b` from `at`, as nft prints them. */
export function readTextFields(l: Layout, b: Uint8Array, at: number): string {
  const f = l.fields;
  if (f.length === 1) return readValue(f[0]!, b, at);
  let out = readValue(f[0]!, b, at + l.offsets[0]!);
  for (let i = 1; i < f.length; i++) out += SEP + readValue(f[i]!, b, at + l.offsets[i]!);
  return out;
}
