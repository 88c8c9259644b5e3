/**
 * Listening and closing for nftproxy's small HTTP servers (/healthz, /metrics, health check
 * node ports).
 */
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';

/**
 * Makes `server` listen on `host:port` (`[v6]:port` too; empty host: every IPv4 address;
 * port 0: any free one); resolves with the bound port. `what` names it in errors.
 */
export async function listenOn(server: Server, bind: string, what: string): Promise<number> {
  const i = bind.lastIndexOf(':');
  const host = bind.slice(0, i) || '0.0.0.0';
  const port = Number(bind.slice(i + 1));
  if (i < 0 || bind.slice(i + 1) === '' || !Number.isInteger(port) || port < 0 || port > 65535)
    throw new Error(`${what} bind address: want host:port, got ${JSON.stringify(bind)}`);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host.replace(/^\[|\]$/g, ''), () => {
      server.off('error', reject);
      resolve();
    });
  });
  return (server.address() as AddressInfo).port;
}

/** Stops listening and drops open connections (health checkers and scrapers keep them alive). */
export function closeServer(server: Server): Promise<void> {
  return new Promise<void>((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}
