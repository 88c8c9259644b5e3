/**
 * One long-lived conversation with nf_tables: sends batches and reads what the kernel answers
 * for each message, and runs dump requests. Synchronous on purpose: the kernel handles a
 * batch inside send(2) and answers a dump at once, so nothing here waits on the network.
 */
import { NftError, NftErrorKind } from '../errors.js';
import {
  messageAttrs,
  NLM_F_ACK,
  NLM_F_DUMP,
  NLM_F_DUMP_INTR,
  NLM_F_REQUEST,
  NLMSG_DONE,
  NLMSG_ERROR,
  NlWriter,
  parseError,
  parseMessages,
} from './attr.js';
import type { BatchMessage } from './batch.js';
import { msgType, NFPROTO } from './constants.js';
import { Errno, NetlinkSocket, type SocketOptions, strerror, SyscallError } from './socket.js';

const RECV_BUF = 1 << 20;

/** The NftError kind of an errno. */
export function kindOfErrno(errno: number): NftError['kind'] {
  switch (errno) {
    case Errno.ENOENT:
      return NftErrorKind.NotFound;
    case Errno.EEXIST:
      return NftErrorKind.Exists;
    case Errno.EBUSY:
      return NftErrorKind.Busy;
    case Errno.EPERM:
    case Errno.EPROTONOSUPPORT:
    case Errno.EOPNOTSUPP:
      return NftErrorKind.Unavailable;
    default:
      return NftErrorKind.Failed;
  }
}

/** A failed message of a batch: which command, and what the kernel said. */
export interface MessageFailure {
  what: string;
  errno: number;
  message?: string;
}

/** A connection to nf_tables in one network namespace. */
export class NetlinkConnection {
  private readonly sock: NetlinkSocket;
  private readonly rbuf = Buffer.allocUnsafe(RECV_BUF);
  private seq: number;
  private rcvbuf = 0;

  constructor(opts: SocketOptions = {}) {
    this.sock = NetlinkSocket.open(opts);
    // Sequence numbers only need to tell our messages apart; start somewhere unlikely to
    // repeat across restarts, as nft does with the time.
    this.seq = Math.floor(Date.now() / 1000) & 0x7fffffff;
  }

  /** The socket's port id: notifications of our own commits carry it. */
  get portId(): number {
    return this.sock.portId;
  }

  /** Reserves `n` sequence numbers; returns the first. */
  nextSeq(n: number): number {
    const s = this.seq;
    this.seq = (this.seq + n) & 0x7fffffff;
    return s;
  }

  /**
   * Sends a batch and returns the failures the kernel reported (empty: it was committed).
   * Every message asked for an acknowledgement; all of them are read.
   */
  sendBatch(buf: Buffer, messages: BatchMessage[]): MessageFailure[] {
    // Room for an acknowledgement per message (an skb each, ~1 KiB of buffer accounting).
    const need = Math.max(1 << 20, messages.length * 1536);
    if (need > this.rcvbuf) {
      this.sock.setReceiveBuffer(need);
      this.rcvbuf = need;
    }
    this.drain();
    const bySeq = new Map(messages.map((m) => [m.seq, m]));
    this.sock.send(buf);
    const failures: MessageFailure[] = [];
    let acked = 0;
    // Everything is queued by the time send returns; read until the queue is empty.
    for (;;) {
      const n = this.sock.receive(this.rbuf, false);
      if (n < 0) break;
      for (const m of parseMessages(this.rbuf, n)) {
        if (m.type !== NLMSG_ERROR) continue;
        const e = parseError(m);
        if (e.errno === 0) {
          if (bySeq.has(e.seq)) acked++;
          continue;
        }
        const msg = bySeq.get(e.seq);
        failures.push({
          what: msg ? msg.what() : `batch message ${e.seq}`,
          errno: e.errno,
          ...(e.message ? { message: e.message } : {}),
        });
      }
    }
    if (!failures.length && acked < messages.length) {
      // Not every message was acknowledged and none failed: the kernel did not take the
      // batch as we sent it. Never report a commit we cannot confirm.
      failures.push({
        what: 'the batch',
        errno: Errno.EINVAL,
        message: `only ${acked} of ${messages.length} messages were acknowledged`,
      });
    }
    return failures;
  }

  /** Throws the NftError for failures of a batch, if any. */
  static check(failures: MessageFailure[]): void {
    if (!failures.length) return;
    const f = failures[0]!;
    const detail = f.message ? `${strerror(f.errno)} (${f.message})` : strerror(f.errno);
    const more = failures.length > 1 ? `; ${failures.length - 1} more message(s) failed` : '';
    throw new NftError(kindOfErrno(f.errno), `netlink: ${f.what}: ${detail}${more}`, '', f.errno);
  }

  /**
   * Runs a dump request (GET with NLM_F_DUMP) and returns the answering messages' attribute
   * payloads. An ENOENT answer (no such table or set) returns undefined.
   */
  dump(msg: number, family: 'ip' | 'ip6', fill: (w: NlWriter) => void): Buffer[] | undefined {
    for (let attempt = 0; ; attempt++) {
      const w = new NlWriter(512);
      const seq = this.nextSeq(1);
      const m = w.begin(msgType(msg), NLM_F_REQUEST | NLM_F_DUMP, seq, NFPROTO[family]);
      fill(w);
      w.end(m);
      this.drain();
      this.sock.send(w.view());
      const out: Buffer[] = [];
      let interrupted = false;
      for (;;) {
        const n = this.sock.receive(this.rbuf, true);
        const msgs = parseMessages(this.rbuf, n);
        let done = false;
        for (const r of msgs) {
          if (r.seq !== seq) continue;
          if (r.flags & NLM_F_DUMP_INTR) interrupted = true;
          if (r.type === NLMSG_DONE) {
            done = true;
            break;
          }
          if (r.type === NLMSG_ERROR) {
            const e = parseError(r);
            if (e.errno === 0) continue;
            if (e.errno === Errno.ENOENT) return undefined;
            throw new NftError(
              kindOfErrno(e.errno),
              `netlink dump failed: ${strerror(e.errno)}`,
              '',
              e.errno,
            );
          }
          // The payload is copied: the receive buffer is reused.
          out.push(Buffer.from(messageAttrs(r)));
        }
        if (done) break;
      }
      // A dump that raced with a commit may be inconsistent: the kernel says so; ask again.
      if (!interrupted || attempt >= 5) return out;
    }
  }

  /**
   * Runs a GET of one object and returns its attribute payload, or undefined when the
   * kernel answers ENOENT.
   */
  get(msg: number, family: 'ip' | 'ip6', fill: (w: NlWriter) => void): Buffer | undefined {
    const w = new NlWriter(512);
    const seq = this.nextSeq(1);
    const m = w.begin(msgType(msg), NLM_F_REQUEST | NLM_F_ACK, seq, NFPROTO[family]);
    fill(w);
    w.end(m);
    this.drain();
    this.sock.send(w.view());
    let out: Buffer | undefined;
    for (;;) {
      const n = this.sock.receive(this.rbuf, true);
      for (const r of parseMessages(this.rbuf, n)) {
        if (r.seq !== seq) continue;
        if (r.type !== NLMSG_ERROR) {
          out = Buffer.from(messageAttrs(r));
          continue;
        }
        const e = parseError(r);
        if (e.errno === 0) return out;
        if (e.errno === Errno.ENOENT) return undefined;
        throw new NftError(kindOfErrno(e.errno), `netlink get failed: ${strerror(e.errno)}`, '', e.errno);
      }
    }
  }

  /**
   * Runs a GET that the kernel answers with several messages (one per element asked for,
   * about `answers` of them), then its ACK; returns their attribute payloads, or undefined
   * when the kernel answers ENOENT (something asked for is not there).
   */
  getMany(
    msg: number,
    family: 'ip' | 'ip6',
    answers: number,
    fill: (w: NlWriter) => void,
  ): Buffer[] | undefined {
    // Each answer is an skb of its own, a page or two of buffer accounting.
    const need = Math.max(1 << 20, answers * 8192);
    if (need > this.rcvbuf) {
      this.sock.setReceiveBuffer(need);
      this.rcvbuf = need;
    }
    const w = new NlWriter(1 << 16);
    const seq = this.nextSeq(1);
    const m = w.begin(msgType(msg), NLM_F_REQUEST | NLM_F_ACK, seq, NFPROTO[family]);
    fill(w);
    w.end(m);
    this.drain();
    this.sock.send(w.view());
    const out: Buffer[] = [];
    for (;;) {
      const n = this.sock.receive(this.rbuf, true);
      for (const r of parseMessages(this.rbuf, n)) {
        if (r.seq !== seq) continue;
        if (r.type !== NLMSG_ERROR) {
          out.push(Buffer.from(messageAttrs(r)));
          continue;
        }
        const e = parseError(r);
        if (e.errno === 0) return out;
        if (e.errno === Errno.ENOENT) return undefined;
        throw new NftError(kindOfErrno(e.errno), `netlink get failed: ${strerror(e.errno)}`, '', e.errno);
      }
    }
  }

  /** Discards anything queued (answers to nothing we wait for). */
  private drain(): void {
    try {
      while (this.sock.receive(this.rbuf, false) >= 0);
    } catch (e) {
      // An overrun (ENOBUFS) only means old answers were lost; they are not wanted.
      if (!(e instanceof SyscallError) || e.errno !== Errno.ENOBUFS) throw e;
    }
  }

  close(): void {
    this.sock.close();
  }
}
