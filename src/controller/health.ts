/**
 * /healthz and /livez, as kube-proxy serves them.
 *
 * /livez: the process answers. /healthz: rules are programmed and no change has waited
 * longer than the health timeout (2 x the sync period) to reach the kernel; otherwise 503.
 * The JSON body says why.
 */
import { createServer, type Server } from 'node:http';
import { closeServer, listenOn } from '../net/http.js';
import { type Clock, systemClock } from './queue.js';

/** What the health check needs to know. */
export interface HealthSource {
  /** When the last successful sync finished; undefined before the first. */
  lastSuccessAt: number | undefined;
  /** When the oldest change not yet applied was queued; undefined when nothing waits. */
  pendingSince: number | undefined;
}

/** The health verdict and its reasons. */
export function health(
  src: HealthSource,
  timeoutMs: number,
  now: number,
): { healthy: boolean; body: Record<string, unknown> } {
  const reasons: string[] = [];
  if (src.lastSuccessAt === undefined) reasons.push('no successful sync yet');
  if (src.pendingSince !== undefined && now - src.pendingSince > timeoutMs) {
    reasons.push(
      `a change has waited ${Math.round((now - src.pendingSince) / 1000)} s to be applied (limit ${timeoutMs / 1000} s)`,
    );
  }
  return {
    healthy: reasons.length === 0,
    body: {
      lastUpdated: src.lastSuccessAt === undefined ? null : new Date(src.lastSuccessAt).toISOString(),
      currentTime: new Date(now).toISOString(),
      ...(reasons.length ? { reasons } : {}),
    },
  };
}

/** The health HTTP server. */
export class HealthServer {
  private server: Server | undefined;

  constructor(
    private readonly src: HealthSource,
    private readonly timeoutMs: number,
    private readonly clock: Clock = systemClock,
  ) {}

  /** Listens on `host:port`; resolves with the bound port. */
  async listen(bind: string): Promise<number> {
    this.server = createServer((req, res) => {
      const path = (req.url ?? '').split('?')[0];
      if (path === '/livez') {
        res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      } else if (path === '/healthz') {
        const h = health(this.src, this.timeoutMs, this.clock.now());
        res
          .writeHead(h.healthy ? 200 : 503, { 'content-type': 'application/json' })
          .end(JSON.stringify(h.body) + '\n');
      } else {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      }
    });
    return listenOn(this.server, bind, 'healthz');
  }

  async close(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (s) await closeServer(s);
  }
}
