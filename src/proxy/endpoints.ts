/**
 * Which endpoints a service port forwards to, from where: kube-proxy's rules for readiness,
 * topology hints and traffic policies (its CategorizeEndpoints), in one place.
 */
import { compareIP, parseIP } from '../net/ip.js';
import type { Endpoint, EndpointSlice, ServicePort } from '../k8s/types.js';

/** A forwarding target: endpoint address and the target port number. */
export interface Backend {
  ip: string;
  port: number;
  /** Where the endpoint runs (EndpointSlice `nodeName`), when known. */
  nodeName?: string;
  zone?: string;
  hostname?: string;
  /** Name of the endpoint's target object (normally its Pod). */
  targetName?: string;
}

/** This node, as endpoint choice needs it. */
export interface NodeInfo {
  name: string;
  /** `topology.kubernetes.io/zone` of the Node. */
  zone?: string;
}

/** The endpoints of one service port, by use. */
export interface EndpointCategories {
  /**
   * For traffic that may go anywhere in the cluster: ready endpoints (else serving and
   * terminating ones), narrowed by topology hints when they apply to this node.
   */
  cluster: Backend[];
  /** This node's endpoints, ready (else serving and terminating): policy Local. */
  local: Backend[];
  /** Whether the service port has any endpoint at all, usable or not. */
  any: boolean;
  /** Which topology hints were used, for explain and diagnostics. */
  topology: 'none' | 'zone' | 'node';
}

interface Candidate {
  b: Backend;
  ep: Endpoint;
}

/**
 * Topology mode from hints, as kube-proxy decides it: hints are used only when every ready
 * endpoint has them, and only when at least one is meant for this node (same node) or its
 * zone; otherwise all endpoints are used, so a wrong or partial hint never blackholes traffic.
 * Node hints (trafficDistribution PreferSameNode) take precedence over zone hints.
 */
function topologyMode(ready: Candidate[], node: NodeInfo): EndpointCategories['topology'] {
  if (!ready.length) return 'none';
  let allNode = true;
  let forNode = false;
  let allZone = true;
  let forZone = false;
  for (const { ep } of ready) {
    const nodes = ep.hints?.forNodes ?? [];
    const zones = ep.hints?.forZones ?? [];
    if (!nodes.length) allNode = false;
    else if (nodes.includes(node.name)) forNode = true;
    if (!zones.length) allZone = false;
    else if (node.zone && zones.includes(node.zone)) forZone = true;
  }
  if (allNode && forNode) return 'node';
  if (allZone && forZone) return 'zone';
  return 'none';
}

function sorted(list: Candidate[]): Backend[] {
  // Parse each address once, not in every comparison.
  const keyed = list.map((c) => ({ b: c.b, ip: parseIP(c.b.ip)! }));
  keyed.sort((x, y) => compareIP(x.ip, y.ip) || x.b.port - y.b.port);
  return keyed.map((k) => k.b);
}

/** How usable an endpoint is: ready, else serving and terminating (a fallback), else not. */
function rank(ep: Endpoint): number {
  return ep.conditions.ready ? 2 : ep.conditions.serving && ep.conditions.terminating ? 1 : 0;
}

/** Ready ones if any, else serving and terminating ones (connections drain during rollouts). */
function usable(list: Candidate[]): Candidate[] {
  const ready = list.filter((c) => c.ep.conditions.ready);
  return ready.length ? ready : list.filter((c) => c.ep.conditions.serving && c.ep.conditions.terminating);
}

/**
 * The endpoints of one service port among the slices of one address family, sorted by
 * address and port. The target port comes from each slice's port with the same name and
 * protocol (how named target ports are resolved). An address listed in several slices
 * counts once, with its best condition.
 */
export function categorizeEndpoints(
  sp: ServicePort,
  slices: readonly EndpointSlice[],
  node: NodeInfo,
): EndpointCategories {
  const byKey = new Map<string, Candidate>();
  for (const slice of slices) {
    const p = slice.ports.find((q) => q.name === sp.name && q.protocol === sp.protocol);
    if (p?.port === undefined) continue;
    for (const ep of slice.endpoints) {
      const key = `${ep.address}|${p.port}`;
      const old = byKey.get(key);
      if (old && rank(old.ep) >= rank(ep)) continue;
      const b: Backend = { ip: ep.address, port: p.port };
      if (ep.nodeName) b.nodeName = ep.nodeName;
      if (ep.zone) b.zone = ep.zone;
      if (ep.hostname) b.hostname = ep.hostname;
      if (ep.targetName) b.targetName = ep.targetName;
      byKey.set(key, { b, ep });
    }
  }
  const all = [...byKey.values()];
  const topology = topologyMode(
    all.filter((c) => c.ep.conditions.ready),
    node,
  );
  const inTopology = (c: Candidate) =>
    topology === 'none'
      ? true
      : topology === 'node'
        ? (c.ep.hints?.forNodes ?? []).includes(node.name)
        : (c.ep.hints?.forZones ?? []).includes(node.zone ?? '');
  return {
    cluster: sorted(usable(all.filter(inTopology))),
    local: sorted(usable(all.filter((c) => c.b.nodeName === node.name))),
    any: all.length > 0,
    topology,
  };
}

/** The usable backends of one service port, ignoring topology and locality. */
export function usableBackends(sp: ServicePort, slices: readonly EndpointSlice[]): Backend[] {
  return categorizeEndpoints(sp, slices, { name: '' }).cluster;
}
