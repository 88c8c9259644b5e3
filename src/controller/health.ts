/**
 * /healthz and /livez, as kube-proxy serves them.
 *
 * /livez: the sync loop works: no change has waited longer than the health timeout (2 x the
 * sync period) to reach the kernel; otherwise 503, and the kubelet restarts a stuck process.
 * /healthz: that, rules programmed at least once, and this node eligible for load balancer
 * traffic (not being deleted or drained, KEP-3836); otherwise 503, and load balancers that
 * probe it stop sending traffic here. Both answer JSON saying why, with `nosniff`.
 */
import type { Reply, Route } from '../net/http.js';
import { type Clock, systemClock } from './queue.js';

/** What the health check needs to know. */
export interface HealthSource {
  /** When the last successful sync finished; undefined before the first. */
  lastSuccessAt: number | undefined;
  /** When the oldest change not yet applied was queued; undefined when nothing waits. */
  pendingSince: number | undefined;
}

/** A health verdict: the status code's meaning, and the JSON body that explains it. */
export interface HealthVerdict {
  healthy: boolean;
  body: Record<string, unknown>;
}

/** Why the sync loop does not keep up: a change waiting longer than `timeoutMs`. */
function stale(src: HealthSource, timeoutMs: number, now: number): string[] {
  if (src.pendingSince === undefined || now - src.pendingSince <= timeoutMs) return [];
  return [
    `a change has waited ${Math.round((now - src.pendingSince) / 1000)} s to be applied (limit ${timeoutMs / 1000} s)`,
  ];
}

/** A verdict from its reasons (none: healthy), with kube-proxy's body fields. */
function verdict(
  src: HealthSource,
  now: number,
  reasons: string[],
  extra: Record<string, unknown> = {},
): HealthVerdict {
  return {
    healthy: reasons.length === 0,
    body: {
      lastUpdated: src.lastSuccessAt === undefined ? null : new Date(src.lastSuccessAt).toISOString(),
      currentTime: new Date(now).toISOString(),
      ...extra,
      ...(reasons.length ? { reasons } : {}),
    },
  };
}

const notSynced = (src: HealthSource) => (src.lastSuccessAt === undefined ? ['no successful sync yet'] : []);

/** /livez: whether the sync loop keeps up (no change waits longer than `timeoutMs`). */
export function liveness(src: HealthSource, timeoutMs: number, now: number): HealthVerdict {
  return verdict(src, now, stale(src, timeoutMs, now));
}

/** The rules' health: live, and programmed at least once. */
export function health(src: HealthSource, timeoutMs: number, now: number): HealthVerdict {
  return verdict(src, now, [...notSynced(src), ...stale(src, timeoutMs, now)]);
}

/**
 * /healthz: the rules' health, and whether this node should get load balancer traffic.
 * `draining` says why it should not (undefined: it should).
 */
export function readiness(
  src: HealthSource,
  timeoutMs: number,
  now: number,
  draining: string | undefined,
): HealthVerdict {
  const reasons = [
    ...notSynced(src),
    ...stale(src, timeoutMs, now),
    ...(draining ? [`node ${draining}`] : []),
  ];
  return verdict(src, now, reasons, { nodeEligible: draining === undefined });
}

/** The /livez and /healthz routes; `draining`: why this node should get no load balancer traffic now (undefined: it should). */
export function healthRoutes(
  src: HealthSource,
  timeoutMs: number,
  clock: Pick<Clock, 'now'> = systemClock,
  draining: () => string | undefined = () => undefined,
): Map<string, Route> {
  const answer = (v: HealthVerdict): Reply => ({
    status: v.healthy ? 200 : 503,
    type: 'application/json',
    body: JSON.stringify(v.body) + '\n',
  });
  return new Map([
    ['/livez', () => answer(liveness(src, timeoutMs, clock.now()))],
    ['/healthz', () => answer(readiness(src, timeoutMs, clock.now(), draining()))],
  ]);
}
