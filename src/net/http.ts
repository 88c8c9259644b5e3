/**
 * nftproxy's small HTTP servers: one server of fixed GET routes (/metrics, /healthz, /livez),
 * and listening and closing for it and the health check node ports.
 */
import { readdir, readFile, readlink } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { createServer, type Server, type ServerResponse } from 'node:http';

/** What a route answers. */
export interface Reply {
  status: number;
  /** The content type. */
  type: string;
  body: string;
}

/** A route: computes its answer for each GET or HEAD (a throw is a 500 saying why). */
export type Route = () => Reply | Promise<Reply>;

/**
 * A server of fixed paths, answered to GET and HEAD (405 otherwise, 404 for any other path;
 * the query string is ignored). Every answer is sent with `nosniff`.
 */
export class RouteServer {
  private server: Server | undefined;

  constructor(private readonly routes: ReadonlyMap<string, Route>) {}

  /** Listens on `host:port` (port 0: any free one); resolves with the bound port. */
  async listen(bind: string, what: string): Promise<number> {
    this.server = createServer((req, res) => {
      const route = this.routes.get((req.url ?? '').split('?')[0]!);
      if (!route) return send(res, false, { status: 404, type: 'text/plain', body: 'not found\n' });
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.setHeader('allow', 'GET, HEAD');
        return send(res, false, { status: 405, type: 'text/plain', body: 'method not allowed\n' });
      }
      const head = req.method === 'HEAD';
      void Promise.resolve()
        .then(route)
        .then(
          (reply) => send(res, head, reply),
          (e: unknown) =>
            send(res, head, {
              status: 500,
              type: 'text/plain',
              body: `cannot answer ${req.url}: ${e instanceof Error ? e.message : String(e)}\n`,
            }),
        );
    });
    return listenOn(this.server, bind, what);
  }

  /** Stops listening and drops open connections. */
  async close(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (s) await closeServer(s);
  }
}

function send(res: ServerResponse, head: boolean, reply: Reply): void {
  res
    .writeHead(reply.status, { 'content-type': reply.type, 'x-content-type-options': 'nosniff' })
    .end(head ? '' : reply.body);
}

/**
 * A server could not listen: the address, what it was for and why, in one line for the user
 * (`nftproxy: cannot listen on 0.0.0.0:10256 for /healthz: ...`).
 */
export class BindError extends Error {
  override readonly name = 'BindError';
  constructor(
    readonly bind: string,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Listens on `port` of `host` (every address, IPv4 and IPv6, when undefined); rejects with
 * the socket's error (EADDRINUSE...) as it is.
 */
export function listening(server: Server, port: number, host?: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    const done = () => {
      server.off('error', reject);
      resolve();
    };
    if (host) server.listen(port, host, done);
    else server.listen(port, done);
  });
}

/** Who usually holds a port nftproxy's servers default to. */
const WELL_KNOWN: Record<number, string> = {
  10256: "kube-proxy's /healthz",
  10249: "kube-proxy's /metrics",
};

/**
 * Makes `server` listen on `host:port` (`[v6]:port` too; empty host: every IPv4 address;
 * port 0: any free one); resolves with the bound port. `what` names it in errors. A failure
 * is a BindError naming the address and, for a port in use, who holds it when that can be
 * seen (/proc), else who usually does.
 */
export async function listenOn(server: Server, bind: string, what: string): Promise<number> {
  const i = bind.lastIndexOf(':');
  const host = bind.slice(0, i) || '0.0.0.0';
  const port = Number(bind.slice(i + 1));
  if (i < 0 || bind.slice(i + 1) === '' || !Number.isInteger(port) || port < 0 || port > 65535)
    throw new BindError(bind, `${what} bind address: want host:port, got ${JSON.stringify(bind)}`);
  try {
    await listening(server, port, host.replace(/^\[|\]$/g, ''));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    let why = e instanceof Error ? e.message : String(e);
    if (code === 'EADDRINUSE') {
      const owner = (await portOwner(port)) ?? WELL_KNOWN[port];
      why = `the port is in use${owner ? ` (by ${owner})` : ''}`;
      if (WELL_KNOWN[port])
        why += `; if kube-proxy still runs on this node, give nftproxy other ports meanwhile (overlays/alongside-kube-proxy, docs/operations.md)`;
    } else if (code === 'EADDRNOTAVAIL') why = 'no such local address';
    else if (code === 'EACCES') why = 'permission denied';
    throw new BindError(bind, `cannot listen on ${bind} for ${what}: ${why}`);
  }
  return (server.address() as AddressInfo).port;
}

/**
 * The process listening on a TCP port, as `name (pid N)`, when this process can see it
 * (same PID namespace, permission to read its fds); undefined otherwise.
 */
export async function portOwner(port: number, proc = '/proc'): Promise<string | undefined> {
  const inodes = new Set<string>();
  for (const table of ['net/tcp', 'net/tcp6']) {
    const text = await readFile(join(proc, table), 'utf8').catch(() => '');
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      // local_address is ADDR:PORT in hex; state 0A is LISTEN; the inode is field 9.
      if (f.length > 9 && f[3] === '0A' && parseInt(f[1]!.split(':')[1]!, 16) === port) inodes.add(f[9]!);
    }
  }
  if (!inodes.size) return undefined;
  const pids = (await readdir(proc).catch(() => [] as string[])).filter((d) => /^\d+$/.test(d));
  for (const pid of pids) {
    const fds = await readdir(join(proc, pid, 'fd')).catch(() => [] as string[]);
    for (const fd of fds) {
      const link = await readlink(join(proc, pid, 'fd', fd)).catch(() => '');
      const m = /^socket:\[(\d+)\]$/.exec(link);
      if (m && inodes.has(m[1]!)) {
        const comm = (await readFile(join(proc, pid, 'comm'), 'utf8').catch(() => '?')).trim();
        return `${comm} (pid ${pid})`;
      }
    }
  }
  return undefined;
}

/** Stops listening and drops open connections (health checkers and scrapers keep them alive). */
export function closeServer(server: Server): Promise<void> {
  return new Promise<void>((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}
