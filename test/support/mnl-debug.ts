/**
 * Reads what `nft --debug=mnl` prints (libmnl's mnl_nlmsg_fprintf) back into the bytes nft
 * sent, so tests can compare nftproxy's netlink encoder with nft byte for byte.
 *
 * The dump shows each message's header (length, type, the REQUEST/MULTI/ACK/ECHO flag
 * letters, sequence, port), the nfgenmsg header, then every attribute header followed by its
 * payload in 4-byte lines, nested attributes inline. Concatenating headers and payload lines
 * gives the attribute bytes exactly, padding included. Flags other than the four letters
 * (CREATE, EXCL, ...) are not shown by libmnl, so they are not compared.
 */
import { execa } from 'execa';

/** One message of the dump. */
export interface MnlMessage {
  type: number;
  /** `R---`: request, multi, ack, echo. */
  flagLetters: string;
  seq: number;
  portId: number;
  /** The 4-byte nfgenmsg header. */
  extra: Buffer;
  /** The attributes, as sent. */
  attrs: Buffer;
}

// eslint-disable-next-line no-control-regex
const ANSI = /\x1b\[[0-9;]*m/g;

/** Parses a `--debug=mnl` dump. */
export function parseMnlDebug(text: string): MnlMessage[] {
  const out: MnlMessage[] = [];
  let cur:
    | {
        type?: number;
        flagLetters?: string;
        seq?: number;
        portId?: number;
        extra?: number[];
        bytes: number[];
      }
    | undefined;
  const flush = () => {
    if (cur?.type !== undefined) {
      out.push({
        type: cur.type,
        flagLetters: cur.flagLetters ?? '',
        seq: cur.seq ?? 0,
        portId: cur.portId ?? 0,
        extra: Buffer.from(cur.extra ?? []),
        attrs: Buffer.from(cur.bytes),
      });
    }
    cur = undefined;
  };
  for (const raw of text.split('\n')) {
    const line = raw.replace(ANSI, '');
    if (/\| message length \|/.test(line)) {
      flush();
      cur = { bytes: [] };
      continue;
    }
    if (!cur) continue;
    let m: RegExpExecArray | null;
    if ((m = /^\|\s+(\d{5}) \| ([RMAE-]{4}) \|\s+\|\s+type \| flags/.exec(line))) {
      cur.type = Number(m[1]);
      cur.flagLetters = m[2]!;
    } else if ((m = /^\|\s+(\d{10})\s+\|\s+\| sequence number\|/.exec(line))) {
      cur.seq = Number(m[1]);
    } else if ((m = /^\|\s+(\d{10})\s+\|\s+\|\s+port ID\s+\|/.exec(line))) {
      cur.portId = Number(m[1]);
    } else if (
      (m = /^\| ([0-9a-f]{2}) ([0-9a-f]{2}) ([0-9a-f]{2}) ([0-9a-f]{2})\s+\|\s+\|\s+extra header/.exec(line))
    ) {
      cur.extra = [m[1], m[2], m[3], m[4]].map((h) => parseInt(h!, 16));
    } else if ((m = /^\|(\d{5})\|([N-])([B-])\|(\d{5})\|\s+\|len \|flags\| type\|/.exec(line))) {
      const len = Number(m[1]);
      const type = Number(m[4]) | (m[2] === 'N' ? 0x8000 : 0) | (m[3] === 'B' ? 0x4000 : 0);
      cur.bytes.push(len & 0xff, len >> 8, type & 0xff, type >> 8);
    } else if (
      (m = /^\| ([0-9a-f]{2}) ([0-9a-f]{2}) ([0-9a-f]{2}) ([0-9a-f]{2})\s+\|\s+\|\s+data\s+\|/.exec(line))
    ) {
      cur.bytes.push(...[m[1], m[2], m[3], m[4]].map((h) => parseInt(h!, 16)));
    }
  }
  flush();
  return out;
}

/** NFNL_MSG_BATCH_BEGIN / END. */
const BATCH_BEGIN = 0x10;
const BATCH_END = 0x11;

/** The messages nft sent inside its batch (between BEGIN and END, both excluded). */
export function batchOf(messages: MnlMessage[]): MnlMessage[] {
  const begin = messages.findIndex((m) => m.type === BATCH_BEGIN);
  const end = messages.findIndex((m, i) => i > begin && m.type === BATCH_END);
  if (begin < 0 || end < 0) throw new Error('no batch in the nft debug output');
  return messages.slice(begin + 1, end);
}

/**
 * Runs `nft --debug=mnl -f -` of `script` in a network namespace (it is applied there) and
 * returns the messages of its batch.
 */
export async function nftBatch(netns: string, script: string): Promise<MnlMessage[]> {
  const r = await execa('ip', ['netns', 'exec', netns, 'nft', '--debug=mnl', '-f', '-'], {
    input: script,
    all: true,
    maxBuffer: 1 << 30,
  });
  return batchOf(parseMnlDebug(r.all ?? ''));
}

/** One message of a batch as the comparison sees it. */
interface Entry {
  group: string;
  attrs: Buffer;
}

function str(attrs: Buffer, type: number): string | undefined {
  let p = 0;
  while (p + 4 <= attrs.length) {
    const len = attrs.readUInt16LE(p);
    const t = attrs.readUInt16LE(p + 2) & 0x3fff;
    if (len < 4) break;
    if (t === type) return attrs.toString('utf8', p + 4, p + len).replace(/\0+$/, '');
    p += (len + 3) & ~3;
  }
  return undefined;
}

/** The object a message is about: `family msg name` (rules and elements by chain or set). */
function groupOf(type: number, family: number, attrs: Buffer): string {
  const m = type & 0xff;
  // NEWRULE/DELRULE: chain (2); set element and set messages: set (2); chains: name (3).
  const name = m === 3 || m === 5 ? str(attrs, 3) : m === 0 || m === 2 ? str(attrs, 1) : str(attrs, 2);
  return `${family} ${m} ${name}`;
}

/** The elements of a NEWSETELEM/DELSETELEM message, each without its list index. */
function elementsOf(attrs: Buffer): string[] {
  const out: string[] = [];
  let p = 0;
  while (p + 4 <= attrs.length) {
    const len = attrs.readUInt16LE(p);
    const t = attrs.readUInt16LE(p + 2) & 0x3fff;
    if (len < 4) break;
    if (t === 3) {
      let q = p + 4;
      while (q + 4 <= p + len) {
        const l = attrs.readUInt16LE(q);
        if (l < 4) break;
        out.push(attrs.toString('hex', q + 4, q + l));
        q += (l + 3) & ~3;
      }
    }
    p += (len + 3) & ~3;
  }
  return out;
}

/**
 * Compares the messages of nft's batch with ours (the attributes after nfgenmsg), object by
 * object in order. nft also sends the elements of a one-field interval set a second time, at
 * the set's creation; for those sets the elements are compared as a set instead. Returns the
 * differences, empty when equal.
 */
export function compareBatches(
  theirs: MnlMessage[],
  ours: { type: number; family: number; attrs: Buffer }[],
  intervalSets: Set<string>,
  opts: { withoutSetIds?: boolean } = {},
): string[] {
  const groups = new Map<string, { t: Entry[]; o: Entry[] }>();
  const put = (side: 't' | 'o', type: number, family: number, raw: Buffer) => {
    const m = type & 0xff;
    // NFTA_SET_ELEM_LIST_SET_ID: nft numbers even the sets it read from the kernel.
    const attrs = opts.withoutSetIds && (m === 12 || m === 14) ? withoutAttr(raw, 4) : raw;
    const group = groupOf(type, family, attrs);
    let g = groups.get(group);
    if (!g) groups.set(group, (g = { t: [], o: [] }));
    g[side].push({ group, attrs });
  };
  for (const m of theirs) put('t', m.type, m.extra[0]!, m.attrs);
  for (const m of ours) put('o', m.type, m.family, m.attrs);
  const out: string[] = [];
  for (const [group, g] of groups) {
    const [, msg, name] = group.split(' ');
    if ((msg === '12' || msg === '14') && intervalSets.has(name!)) {
      const a = new Set(g.t.flatMap((e) => elementsOf(e.attrs)));
      const b = new Set(g.o.flatMap((e) => elementsOf(e.attrs)));
      if (a.size !== b.size || [...a].some((x) => !b.has(x))) out.push(`${group}: interval elements differ`);
      continue;
    }
    if (g.t.length !== g.o.length)
      out.push(`${group}: nft sent ${g.t.length} messages, nftproxy ${g.o.length}`);
    for (let i = 0; i < Math.min(g.t.length, g.o.length); i++) {
      if (!g.t[i]!.attrs.equals(g.o[i]!.attrs))
        out.push(
          `${group} #${i}:\n  nft      ${hexStart(g.t[i]!.attrs)}\n  nftproxy ${hexStart(g.o[i]!.attrs)}`,
        );
    }
  }
  return out;
}

/** The first bytes of a message as hex (messages run to 64 KiB). */
function hexStart(b: Buffer): string {
  return b.length > 96 ? `${b.subarray(0, 96).toString('hex')}... (${b.length} bytes)` : b.toString('hex');
}

/** The attributes without those of one type (top level). */
function withoutAttr(attrs: Buffer, type: number): Buffer {
  const parts: Buffer[] = [];
  let p = 0;
  while (p + 4 <= attrs.length) {
    const len = attrs.readUInt16LE(p);
    if (len < 4) break;
    const next = p + ((len + 3) & ~3);
    if ((attrs.readUInt16LE(p + 2) & 0x3fff) !== type) parts.push(attrs.subarray(p, next));
    p = next;
  }
  return Buffer.concat(parts);
}
