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
      cur.flagLetters = m[2];
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
