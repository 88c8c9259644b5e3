/**
 * Netlink messages and attributes (TLVs): a writer that appends to one growing buffer, and a
 * reader. Header fields are host byte order (little-endian on every platform nftproxy runs
 * on; checked at load), attribute payloads are whatever the attribute says, usually
 * big-endian for nf_tables numbers.
 */
import { endianness } from 'node:os';

if (endianness() !== 'LE') throw new Error('nftproxy netlink: big-endian hosts are not supported');

/** struct nlmsghdr + struct nfgenmsg. */
export const NLMSG_HDRLEN = 16;
export const NFGEN_HDRLEN = 4;
/** Attribute header: u16 length, u16 type. */
export const NLA_HDRLEN = 4;
/** The type bit of a nested attribute. */
export const NLA_F_NESTED = 0x8000;
/** The type bit of an attribute in network byte order (unused by nf_tables, masked on read). */
export const NLA_F_NET_BYTEORDER = 0x4000;
const NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xffff;

export const NLM_F_REQUEST = 0x1;
export const NLM_F_MULTI = 0x2;
export const NLM_F_ACK = 0x4;
export const NLM_F_ECHO = 0x8;
export const NLM_F_DUMP_INTR = 0x10;
/** GET: dump everything (ROOT | MATCH). */
export const NLM_F_DUMP = 0x300;
/** NEW: replace / exclusive / create / append. */
export const NLM_F_REPLACE = 0x100;
export const NLM_F_EXCL = 0x200;
export const NLM_F_CREATE = 0x400;
export const NLM_F_APPEND = 0x800;
/** In an NLMSG_ERROR: the original message is not echoed / extended ack attributes follow. */
export const NLM_F_CAPPED = 0x100;
export const NLM_F_ACK_TLVS = 0x200;

export const NLMSG_NOOP = 1;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;

/** Extended ack attributes (NLMSGERR_ATTR_*). */
export const NLMSGERR_ATTR_MSG = 1;
export const NLMSGERR_ATTR_OFFS = 2;

const align4 = (n: number) => (n + 3) & ~3;

/**
 * Appends netlink messages to one buffer. Messages and nests are opened and closed like
 * brackets; closing writes their length.
 */
export class NlWriter {
  buf: Buffer;
  pos = 0;

  constructor(initial = 1 << 16) {
    this.buf = Buffer.allocUnsafe(initial);
  }

  /** Makes room for `n` more bytes. */
  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  /** Opens a message with an nfgenmsg header; returns its start for `end`. */
  begin(type: number, flags: number, seq: number, family: number, resId = 0): number {
    this.ensure(NLMSG_HDRLEN + NFGEN_HDRLEN);
    const start = this.pos;
    const b = this.buf;
    b.writeUInt32LE(0, start);
    b.writeUInt16LE(type, start + 4);
    b.writeUInt16LE(flags, start + 6);
    b.writeUInt32LE(seq >>> 0, start + 8);
    b.writeUInt32LE(0, start + 12);
    b[start + 16] = family;
    b[start + 17] = 0; // NFNETLINK_V0
    b.writeUInt16BE(resId, start + 18);
    this.pos = start + NLMSG_HDRLEN + NFGEN_HDRLEN;
    return start;
  }

  /** Closes the message opened at `start`. */
  end(start: number): void {
    this.buf.writeUInt32LE(this.pos - start, start);
  }

  /** Opens a nested attribute; returns its start for `endNest`. */
  nest(type: number): number {
    this.ensure(NLA_HDRLEN);
    const start = this.pos;
    this.buf.writeUInt16LE(type | NLA_F_NESTED, start + 2);
    this.pos += NLA_HDRLEN;
    return start;
  }

  endNest(start: number): void {
    this.buf.writeUInt16LE(this.pos - start, start);
  }

  /** Opens a plain attribute whose payload the caller writes with the `put*` methods. */
  open(type: number): number {
    this.ensure(NLA_HDRLEN);
    const start = this.pos;
    this.buf.writeUInt16LE(type, start + 2);
    this.pos += NLA_HDRLEN;
    return start;
  }

  /** Closes a plain attribute: writes its length and pads to 4 bytes with zeros. */
  close(start: number): void {
    const len = this.pos - start;
    this.buf.writeUInt16LE(len, start);
    this.pad();
  }

  private pad(): void {
    const to = align4(this.pos);
    this.ensure(to - this.pos);
    while (this.pos < to) this.buf[this.pos++] = 0;
  }

  /** An attribute with these bytes. */
  bytes(type: number, data: Uint8Array): void {
    const s = this.open(type);
    this.ensure(data.length);
    this.buf.set(data, this.pos);
    this.pos += data.length;
    this.close(s);
  }

  /** A NUL-terminated string attribute. */
  str(type: number, s: string): void {
    const n = Buffer.byteLength(s);
    const a = this.open(type);
    this.ensure(n + 1);
    this.buf.write(s, this.pos, 'utf8');
    this.pos += n;
    this.buf[this.pos++] = 0;
    this.close(a);
  }

  /** A big-endian u32 attribute (nf_tables numbers). */
  u32(type: number, v: number): void {
    this.ensure(8);
    this.buf.writeUInt16LE(8, this.pos);
    this.buf.writeUInt16LE(type, this.pos + 2);
    this.buf.writeUInt32BE(v >>> 0, this.pos + 4);
    this.pos += 8;
  }

  /** A big-endian u64 attribute (handles, timeouts in ms). */
  u64(type: number, v: bigint | number): void {
    this.ensure(12);
    this.buf.writeUInt16LE(12, this.pos);
    this.buf.writeUInt16LE(type, this.pos + 2);
    this.buf.writeBigUInt64BE(BigInt(v), this.pos + 4);
    this.pos += 12;
  }

  /** Raw payload bytes inside an open attribute. */
  put(data: Uint8Array): void {
    this.ensure(data.length);
    this.buf.set(data, this.pos);
    this.pos += data.length;
  }

  /** The bytes written so far (a view, valid until the next write). */
  view(): Buffer {
    return this.buf.subarray(0, this.pos);
  }
}

/** One attribute as read: its type (flags masked off), whether nested, and its payload. */
export interface Attr {
  type: number;
  nested: boolean;
  data: Buffer;
}

/** The attributes in `buf` (one level). Stops at the first malformed header. */
export function parseAttrs(buf: Buffer, start = 0, end = buf.length): Attr[] {
  const out: Attr[] = [];
  let p = start;
  while (p + NLA_HDRLEN <= end) {
    const len = buf.readUInt16LE(p);
    const rawType = buf.readUInt16LE(p + 2);
    if (len < NLA_HDRLEN || p + len > end) break;
    out.push({
      type: rawType & NLA_TYPE_MASK,
      nested: (rawType & NLA_F_NESTED) !== 0,
      data: buf.subarray(p + NLA_HDRLEN, p + len),
    });
    p += align4(len);
  }
  return out;
}

/** The attributes of a message payload by type (the last one wins; nf_tables never repeats). */
export function attrMap(buf: Buffer): Map<number, Attr> {
  const m = new Map<number, Attr>();
  for (const a of parseAttrs(buf)) m.set(a.type, a);
  return m;
}

/** A NUL-terminated string payload. */
export function attrStr(a: Attr | undefined): string | undefined {
  if (!a) return undefined;
  const nul = a.data.indexOf(0);
  return a.data.toString('utf8', 0, nul < 0 ? a.data.length : nul);
}

/** A big-endian u32 payload. */
export function attrU32(a: Attr | undefined): number | undefined {
  return a && a.data.length >= 4 ? a.data.readUInt32BE(0) : undefined;
}

/** One netlink message as read. */
export interface NlMessage {
  type: number;
  flags: number;
  seq: number;
  portId: number;
  /** nfgenmsg family (absent for control messages). */
  family: number;
  /** Everything after the nlmsghdr (the nfgenmsg header and attributes for nfnetlink). */
  body: Buffer;
}

/** The messages in one datagram. */
export function parseMessages(buf: Buffer, length = buf.length): NlMessage[] {
  const out: NlMessage[] = [];
  let p = 0;
  while (p + NLMSG_HDRLEN <= length) {
    const len = buf.readUInt32LE(p);
    if (len < NLMSG_HDRLEN || p + len > length) break;
    out.push({
      type: buf.readUInt16LE(p + 4),
      flags: buf.readUInt16LE(p + 6),
      seq: buf.readUInt32LE(p + 8),
      portId: buf.readUInt32LE(p + 12),
      family: len > NLMSG_HDRLEN ? buf[p + 16]! : 0,
      body: buf.subarray(p + NLMSG_HDRLEN, p + len),
    });
    p += align4(len);
  }
  return out;
}

/** The attributes of an nfnetlink message (after its nfgenmsg header). */
export function messageAttrs(m: NlMessage): Buffer {
  return m.body.subarray(NFGEN_HDRLEN);
}

/** What an NLMSG_ERROR says: errno (0 = ack), the sequence it answers, the extended ack text. */
export interface NlError {
  errno: number;
  seq: number;
  /** The kernel's explanation (extended ack), when it gave one. */
  message?: string;
  /** Byte offset of the offending attribute within the answered message, when given. */
  offset?: number;
}

/** Reads an NLMSG_ERROR message. */
export function parseError(m: NlMessage): NlError {
  const b = m.body;
  const errno = -b.readInt32LE(0);
  // The answered message's header follows; its payload too unless the ack is capped.
  const seq = b.length >= 4 + NLMSG_HDRLEN ? b.readUInt32LE(4 + 8) : 0;
  const out: NlError = { errno, seq };
  if (m.flags & NLM_F_ACK_TLVS) {
    const origLen = b.length >= 8 ? b.readUInt32LE(4) : 0;
    const tlvStart = 4 + (m.flags & NLM_F_CAPPED ? NLMSG_HDRLEN : align4(origLen));
    for (const a of parseAttrs(b, tlvStart)) {
      if (a.type === NLMSGERR_ATTR_MSG) {
        const text = attrStr(a);
        if (text !== undefined) out.message = text;
      } else if (a.type === NLMSGERR_ATTR_OFFS) out.offset = a.data.readUInt32LE(0);
    }
  }
  return out;
}
