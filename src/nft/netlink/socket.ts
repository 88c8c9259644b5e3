/**
 * A NETLINK_NETFILTER socket, through the C library (koffi FFI): the only place nftproxy makes
 * system calls of its own. Everything above it works on Buffers.
 *
 * A socket belongs to the network namespace it was created in, for its whole life. To speak
 * to another namespace, `open({ netns })` enters it on this thread only (setns(2) on a network
 * namespace is per thread), creates the socket, and goes back before returning; no JavaScript
 * runs in between.
 */
import koffi from 'koffi';
import { NftError, NftErrorKind } from '../errors.js';

const AF_NETLINK = 16;
const SOCK_RAW = 3;
const SOCK_CLOEXEC = 0o2000000;
const NETLINK_NETFILTER = 12;
const SOL_SOCKET = 1;
const SO_SNDBUFFORCE = 32;
const SO_RCVBUFFORCE = 33;
const SOL_NETLINK = 270;
const NETLINK_ADD_MEMBERSHIP = 1;
const NETLINK_DROP_MEMBERSHIP = 2;
const NETLINK_NO_ENOBUFS = 5;
const NETLINK_EXT_ACK = 11;
const MSG_DONTWAIT = 0x40;
const CLONE_NEWNET = 0x40000000;
const O_RDONLY = 0;
const O_CLOEXEC = 0o2000000;

/** errno values the callers branch on. */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EINTR: 4,
  EAGAIN: 11,
  ENOMEM: 12,
  EBUSY: 16,
  EEXIST: 17,
  EINVAL: 22,
  ENOSPC: 28,
  EMSGSIZE: 90,
  EPROTONOSUPPORT: 93,
  EOPNOTSUPP: 95,
  ENOBUFS: 105,
} as const;

interface Libc {
  socket: (domain: number, type: number, protocol: number) => number;
  bind: (fd: number, addr: Buffer, len: number) => number;
  getsockname: (fd: number, addr: Buffer, len: number[]) => number;
  setsockopt: (fd: number, level: number, name: number, value: Buffer, len: number) => number;
  send: (fd: number, buf: Buffer, len: number, flags: number) => number;
  recv: (fd: number, buf: Buffer, len: number, flags: number) => number;
  open: (path: string, flags: number) => number;
  close: (fd: number) => number;
  setns: (fd: number, nstype: number) => number;
  strerror: (errnum: number) => string;
}

let libc: Libc | undefined;

/** The C library's functions, loaded once. */
function c(): Libc {
  if (libc) return libc;
  const lib = koffi.load('libc.so.6');
  libc = {
    socket: lib.func('int socket(int, int, int)'),
    bind: lib.func('int bind(int, const void *, uint32_t)'),
    getsockname: lib.func('int getsockname(int, _Out_ void *, _Inout_ uint32_t *)'),
    setsockopt: lib.func('int setsockopt(int, int, int, const void *, uint32_t)'),
    send: lib.func('intptr_t send(int, const void *, size_t, int)'),
    recv: lib.func('intptr_t recv(int, _Out_ void *, size_t, int)'),
    open: lib.func('int open(const char *, int)'),
    close: lib.func('int close(int)'),
    setns: lib.func('int setns(int, int)'),
    strerror: lib.func('const char *strerror(int)'),
  } as Libc;
  return libc;
}

/** The text of an errno value, `No such file or directory`. */
export function strerror(errno: number): string {
  return c().strerror(errno);
}

/** An error of a system call, with its errno. */
export class SyscallError extends Error {
  override readonly name = 'SyscallError';
  constructor(
    readonly call: string,
    readonly errno: number,
  ) {
    super(`${call}: ${strerror(errno)} (errno ${errno})`);
  }
}

function check(call: string, r: number): number {
  if (r < 0) throw new SyscallError(call, koffi.errno());
  return r;
}

function int(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32LE(n);
  return b;
}

/** Where `open` makes the socket. */
export interface SocketOptions {
  /**
   * A network namespace: a name under /run/netns (`ip netns add`) or a path such as
   * /proc/PID/ns/net. Default: the namespace this process runs in.
   */
  netns?: string;
  /** Join these nfnetlink multicast groups (NFNLGRP_*), to receive notifications. */
  groups?: number[];
}

/** The path of a network namespace given by name or path. */
export function netnsPath(netns: string): string {
  return netns.includes('/') ? netns : `/run/netns/${netns}`;
}

/**
 * Runs `fn` with this thread in another network namespace, and comes back, even if `fn`
 * throws. Synchronous on purpose: no other JavaScript can run while the thread is away.
 */
function inNetns<T>(netns: string | undefined, fn: () => T): T {
  if (netns === undefined) return fn();
  const lib = c();
  const self = check(
    'open /proc/thread-self/ns/net',
    lib.open('/proc/thread-self/ns/net', O_RDONLY | O_CLOEXEC),
  );
  let target = -1;
  try {
    target = lib.open(netnsPath(netns), O_RDONLY | O_CLOEXEC);
    if (target < 0) {
      const errno = koffi.errno();
      throw new NftError(
        errno === Errno.ENOENT ? NftErrorKind.NotFound : NftErrorKind.Unavailable,
        `cannot open network namespace ${netns} (${netnsPath(netns)}): ${strerror(errno)}`,
      );
    }
    if (lib.setns(target, CLONE_NEWNET) < 0) {
      throw new NftError(
        NftErrorKind.Unavailable,
        `cannot enter network namespace ${netns}: ${strerror(koffi.errno())}`,
      );
    }
    try {
      return fn();
    } finally {
      // Coming back cannot fail for a namespace we could leave (we hold its descriptor).
      check('setns back', lib.setns(self, CLONE_NEWNET));
    }
  } finally {
    if (target >= 0) lib.close(target);
    lib.close(self);
  }
}

/** A netlink socket speaking nfnetlink to the kernel of one network namespace. */
export class NetlinkSocket {
  private closed = false;
  private sndbuf = 0;

  private constructor(
    readonly fd: number,
    /** The port id the kernel gave this socket; notifications carry the sender's. */
    readonly portId: number,
  ) {}

  /** Opens a socket (in `netns`, if given). */
  static open(opts: SocketOptions = {}): NetlinkSocket {
    const lib = c();
    return inNetns(opts.netns, () => {
      const fd = lib.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
      if (fd < 0) {
        const errno = koffi.errno();
        throw new NftError(
          NftErrorKind.Unavailable,
          `cannot open a netfilter netlink socket: ${strerror(errno)}`,
        );
      }
      try {
        const addr = Buffer.alloc(12);
        addr.writeUInt16LE(AF_NETLINK, 0);
        check('bind', lib.bind(fd, addr, 12));
        const len = [12];
        check('getsockname', lib.getsockname(fd, addr, len));
        const s = new NetlinkSocket(fd, addr.readUInt32LE(4));
        // Errors come with the kernel's message and the offending attribute; best effort.
        lib.setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, int(1), 4);
        for (const g of opts.groups ?? []) s.join(g);
        if (opts.groups?.length) lib.setsockopt(fd, SOL_NETLINK, NETLINK_NO_ENOBUFS, int(0), 4);
        return s;
      } catch (e) {
        lib.close(fd);
        throw e;
      }
    });
  }

  /**
   * Sends one buffer as one datagram. The kernel handles an nfnetlink batch synchronously,
   * inside this call, so by the time it returns every answer is queued for `receive`.
   */
  send(buf: Buffer): void {
    this.assertOpen();
    // A batch travels in one datagram, which must fit the send buffer (SO_SNDBUFFORCE needs
    // CAP_NET_ADMIN, which nftproxy has anyway).
    if (buf.length + 4096 > this.sndbuf) {
      this.sndbuf = Math.max(buf.length + 4096, 1 << 20);
      this.setBuffer(SO_SNDBUFFORCE, this.sndbuf);
    }
    for (;;) {
      const n = c().send(this.fd, buf, buf.length, 0);
      if (n >= 0) return;
      const errno = koffi.errno();
      if (errno !== Errno.EINTR) throw new SyscallError('send', errno);
    }
  }

  /** Joins a multicast group (NFNLGRP_*): its notifications queue here from now on. */
  join(group: number): void {
    this.assertOpen();
    check(
      'join multicast group',
      c().setsockopt(this.fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, int(group), 4),
    );
  }

  /**
   * Leaves a multicast group. While no socket listens, the kernel builds no notifications for
   * it at all (a commit of 600,000 elements builds 600,000 of them for a listener).
   */
  leave(group: number): void {
    this.assertOpen();
    check(
      'leave multicast group',
      c().setsockopt(this.fd, SOL_NETLINK, NETLINK_DROP_MEMBERSHIP, int(group), 4),
    );
  }

  /** Sets the receive buffer (bytes): answers to a large dump, or many notifications, queue there. */
  setReceiveBuffer(bytes: number): void {
    this.setBuffer(SO_RCVBUFFORCE, bytes);
  }

  private setBuffer(opt: number, bytes: number): void {
    check('setsockopt', c().setsockopt(this.fd, SOL_SOCKET, opt, int(bytes), 4));
  }

  /**
   * Receives one datagram into `buf`; returns its length, or -1 if none is queued and
   * `wait` is false. With `wait`, blocks until one arrives (answers to requests come at once).
   */
  receive(buf: Buffer, wait: boolean): number {
    this.assertOpen();
    for (;;) {
      const n = c().recv(this.fd, buf, buf.length, wait ? 0 : MSG_DONTWAIT);
      if (n >= 0) return n;
      const errno = koffi.errno();
      if (errno === Errno.EINTR) continue;
      if (errno === Errno.EAGAIN && !wait) return -1;
      throw new SyscallError('recv', errno);
    }
  }

  /**
   * Calls `onReadable` whenever a datagram is waiting, from the event loop (uv_poll). The
   * returned function stops watching. The watch does not keep the process alive.
   */
  watch(onReadable: () => void): () => void {
    this.assertOpen();
    // koffi 3.3 calls back with (status, events), whatever its typings say.
    const onPoll = (status: number, ev: { readable: boolean }) => {
      if (status >= 0 && ev.readable) onReadable();
    };
    const h = koffi.node.poll(
      this.fd,
      { readable: true },
      onPoll as unknown as (ev: { readable: boolean }) => void,
    );
    h.unref();
    return () => h.close();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    c().close(this.fd);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  private assertOpen(): void {
    if (this.closed) throw new NftError(NftErrorKind.Unavailable, 'netlink socket is closed');
  }
}
