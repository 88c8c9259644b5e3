/**
 * Watching our tables for changes made by anyone else, as `nft monitor` does: a socket
 * joined to the nf_tables notification group hears every commit of the network namespace,
 * message by message, each commit closed by a NEWGEN message naming the process that made
 * it. Commits of our own backend are ignored; any other that touched our table is reported,
 * with the element lines it added and deleted, so the syncer can put back exactly those.
 *
 * If notifications were lost (the socket's buffer overran, e.g. someone flushed a set of
 * 100,000 elements), `onLost` is called: only a full comparison can tell what changed.
 */
import type { ForeignChange, TableChange } from '../backend.js';
import type { Family } from '../ir.js';
import { attrMap, attrStr, attrU32, messageAttrs, parseMessages } from './attr.js';
import { NetlinkConnection } from './connection.js';
import { GenAttr, Msg, NFNL_SUBSYS_NFTABLES, NFNLGRP_NFTABLES, NFPROTO, SetAttr } from './constants.js';
import type { SetSpec } from './datatypes.js';
import { elementLines, specOfSetAttrs } from './decode.js';
import { Errno, NetlinkSocket, SyscallError } from './socket.js';

/** Options of a monitor. */
export interface MonitorOptions {
  /** The network namespace to watch (name under /run/netns, or a path); default ours. */
  netns?: string;
  /** The table watched, in every family. */
  table: string;
  /** Whether a commit by process `pid` was ours (not reported). */
  ours: (pid: number) => boolean;
  onChange: (c: ForeignChange) => void;
  onLost: () => void;
}

/** The family of an nfgenmsg family number. */
const FAMILY = new Map<number, Family>(
  (Object.entries(NFPROTO) as [Family, number][]).map(([f, n]) => [n, f]),
);

/** Room for a burst of notifications (each costs ~1 KiB of socket buffer). */
const RCVBUF = 16 << 20;

/** One notification of the commit under way: an element message keeps its payload. */
interface Pending {
  family: Family;
  skeleton: boolean;
  set?: string;
  op?: '+' | '-';
  payload?: Buffer;
}

/** Watches one table name for foreign commits. */
export class TableMonitor {
  private readonly sock: NetlinkSocket;
  private readonly buf = Buffer.allocUnsafe(1 << 20);
  private stopWatch: (() => void) | undefined;
  private pending: Pending[] = [];
  /** Reads set declarations, to turn element payloads into lines. */
  private conn: NetlinkConnection | undefined;

  constructor(private readonly opts: MonitorOptions) {
    this.sock = NetlinkSocket.open({
      ...(opts.netns ? { netns: opts.netns } : {}),
      groups: [NFNLGRP_NFTABLES],
    });
    this.sock.setReceiveBuffer(RCVBUF);
  }

  /**
   * Starts listening (from the event loop). A failure to read what arrived counts as lost
   * notifications: what changed is then not known.
   */
  start(): void {
    this.stopWatch ??= this.sock.watch(() => {
      try {
        this.readAll();
      } catch {
        this.pending = [];
        this.opts.onLost();
      }
    });
  }

  /** Reads and handles everything queued; public for tests that poll instead of waiting. */
  readAll(): void {
    for (;;) {
      let n: number;
      try {
        n = this.sock.receive(this.buf, false);
      } catch (e) {
        if (e instanceof SyscallError && e.errno === Errno.ENOBUFS) {
          this.pending = [];
          this.opts.onLost();
          continue;
        }
        throw e;
      }
      if (n < 0) return;
      for (const m of parseMessages(this.buf, n)) this.message(m.type, m.family, messageAttrs(m));
    }
  }

  private message(type: number, familyNum: number, attrs: Buffer): void {
    if (type >> 8 !== NFNL_SUBSYS_NFTABLES) return;
    const msg = type & 0xff;
    if (msg === Msg.NEWGEN) return this.commitEnd(attrs);
    const family = FAMILY.get(familyNum);
    if (!family) return;
    const a = attrMap(attrs);
    // Every object message names its table first: NFTA_TABLE_NAME, NFTA_*_TABLE.
    if (attrStr(a.get(1)) !== this.opts.table) return;
    if (msg === Msg.NEWSETELEM || msg === Msg.DELSETELEM) {
      this.pending.push({
        family,
        skeleton: false,
        set: attrStr(a.get(2))!,
        op: msg === Msg.NEWSETELEM ? '+' : '-',
        payload: Buffer.from(attrs),
      });
    } else {
      this.pending.push({ family, skeleton: true });
    }
  }

  private commitEnd(attrs: Buffer): void {
    const pending = this.pending;
    this.pending = [];
    if (!pending.length) return;
    const a = attrMap(attrs);
    const pid = attrU32(a.get(GenAttr.PROC_PID)) ?? 0;
    if (this.opts.ours(pid)) return;
    const tables = new Map<Family, TableChange>();
    const specs = new Map<string, SetSpec | undefined>();
    for (const p of pending) {
      let t = tables.get(p.family);
      if (!t) tables.set(p.family, (t = { skeleton: false, elements: new Map() }));
      if (p.skeleton) {
        t.skeleton = true;
        continue;
      }
      const set = p.set!;
      const evs = t.elements.get(set);
      if (evs === 'unknown') continue;
      const sk = `${p.family} ${set}`;
      if (!specs.has(sk)) specs.set(sk, this.spec(p.family, set));
      const spec = specs.get(sk);
      // Interval elements come as start and end points: only the whole set says what it holds.
      if (!spec || spec.interval) {
        t.elements.set(set, 'unknown');
        continue;
      }
      const list = evs ?? [];
      for (const line of elementLines(spec, [p.payload!])) list.push({ op: p.op!, line });
      t.elements.set(set, list);
    }
    this.opts.onChange({ pid, process: attrStr(a.get(GenAttr.PROC_NAME)) ?? '', tables });
  }

  /**
   * Runs `fn`, which makes at most one commit of ours, without listening: the kernel then
   * builds no notification for it (for a full sync of 50,000 services, 670,000 of them, which
   * tripled the commit's time and overran the socket). Commits by others in the meantime are
   * told by the generation count: more than ours, and `onLost` is called.
   */
  async quietly<T>(fn: () => Promise<T>): Promise<T> {
    const before = this.generation();
    this.sock.leave(NFNLGRP_NFTABLES);
    let ours = 0;
    try {
      const r = await fn();
      ours = 1;
      return r;
    } finally {
      this.sock.join(NFNLGRP_NFTABLES);
      const after = this.generation();
      if (before === undefined || after === undefined || (after - before) >>> 0 > ours) this.opts.onLost();
    }
  }

  /** The commit generation of the namespace (NFTA_GEN_ID), or undefined if it cannot be read. */
  generation(): number | undefined {
    try {
      const got = this.connection().get(Msg.GETGEN, 'ip', () => undefined);
      return got && attrU32(attrMap(got).get(GenAttr.ID));
    } catch {
      return undefined;
    }
  }

  private connection(): NetlinkConnection {
    this.conn ??= new NetlinkConnection(this.opts.netns ? { netns: this.opts.netns } : {});
    return this.conn;
  }

  /** The layout of a set as the kernel holds it now, or undefined (gone, or not ours to read). */
  private spec(family: Family, set: string): SetSpec | undefined {
    const got = this.connection().get(Msg.GETSET, family, (w) => {
      w.str(SetAttr.TABLE, this.opts.table);
      w.str(SetAttr.NAME, set);
    });
    if (!got) return undefined;
    try {
      return specOfSetAttrs(attrMap(got));
    } catch {
      return undefined;
    }
  }

  close(): void {
    this.stopWatch?.();
    this.stopWatch = undefined;
    this.sock.close();
    this.conn?.close();
  }
}
