/**
 * Which endpoints a service port forwards to.
 */
import { compareIP, parseIP } from '../net/ip.js';
import type { EndpointSlice, ServicePort } from '../k8s/types.js';

/** A forwarding target: endpoint address and the target port number. */
export interface Backend {
  ip: string;
  port: number;
  /** Where the endpoint runs (EndpointSlice `nodeName`), when known. */
  nodeName?: string;
}

/**
 * The usable backends of one service port among the slices of one address family, sorted by
 * address and port.
 *
 * The target port comes from each slice's port with the same name and protocol (that is how
 * named target ports are resolved). Usable means ready; when no endpoint is ready, endpoints
 * that are serving and terminating are used instead, so connections drain gracefully during
 * a rollout instead of failing (kube-proxy's rule). An address listed in several slices
 * counts once, with its best condition.
 */
export function usableBackends(sp: ServicePort, slices: readonly EndpointSlice[]): Backend[] {
  const ready = new Map<string, Backend>();
  const terminating = new Map<string, Backend>();
  for (const slice of slices) {
    const p = slice.ports.find((q) => q.name === sp.name && q.protocol === sp.protocol);
    if (p?.port === undefined) continue;
    for (const ep of slice.endpoints) {
      const key = `${ep.address}|${p.port}`;
      const b: Backend = { ip: ep.address, port: p.port, ...(ep.nodeName ? { nodeName: ep.nodeName } : {}) };
      if (ep.conditions.ready) ready.set(key, b);
      else if (ep.conditions.serving && ep.conditions.terminating) terminating.set(key, b);
    }
  }
  // Parse each address once, not in every comparison.
  const keyed = [...(ready.size ? ready : terminating).values()].map((b) => ({ b, ip: parseIP(b.ip)! }));
  keyed.sort((x, y) => compareIP(x.ip, y.ip) || x.b.port - y.b.port);
  return keyed.map((k) => k.b);
}
