/**
 * Builders for Kubernetes objects as raw JSON, parsed through the real parser, so tests
 * read like manifests and exercise the same path as users' files.
 */
import { parseResource } from '../../src/k8s/parse.js';
import type { ClusterState, EndpointSlice, Node, Service, ServiceCIDR } from '../../src/k8s/types.js';
import type { PolicyObject } from '../../src/api/types.js';
import { formatDiagnostic } from '../../src/k8s/types.js';

type Raw = Record<string, unknown>;

function parse<T>(raw: Raw): T {
  const r = parseResource(raw, 'test');
  if (!r.parsed)
    throw new Error(`test object does not parse: ${r.diagnostics.map(formatDiagnostic).join('; ')}`);
  return r.parsed.object as T;
}

/** Port of a service: `{ name, port, protocol?, targetPort?, nodePort? }`. */
export interface PortSpec {
  name?: string;
  port: number;
  protocol?: 'TCP' | 'UDP' | 'SCTP';
  targetPort?: number | string;
  nodePort?: number;
}

/** A Service; `spec` is merged over a ClusterIP default. */
export function service(
  name: string,
  spec: Raw & { ports: PortSpec[] },
  extra: { namespace?: string; labels?: Record<string, string>; status?: Raw } = {},
): Service {
  return parse<Service>({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: {
      name,
      namespace: extra.namespace ?? 'default',
      ...(extra.labels ? { labels: extra.labels } : {}),
    },
    spec: { type: 'ClusterIP', ...spec },
    ...(extra.status ? { status: extra.status } : {}),
  });
}

/** An endpoint: address plus optional conditions and node. */
export interface EndpointSpec {
  ip: string;
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
  node?: string;
  zone?: string;
  hostname?: string;
  /** Pod name (targetRef). */
  pod?: string;
  hints?: { zones?: string[]; nodes?: string[] };
}

let sliceSeq = 0;

/** An EndpointSlice of `serviceName`, address type from the first endpoint. */
export function slice(
  serviceName: string,
  ports: { name?: string; port: number; protocol?: 'TCP' | 'UDP' | 'SCTP' }[],
  endpoints: (string | EndpointSpec)[],
  opts: { namespace?: string; addressType?: 'IPv4' | 'IPv6' } = {},
): EndpointSlice {
  const eps = endpoints.map((e) => (typeof e === 'string' ? { ip: e } : e));
  const addressType = opts.addressType ?? (eps[0]?.ip.includes(':') ? 'IPv6' : 'IPv4');
  return parse<EndpointSlice>({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name: `${serviceName}-${++sliceSeq}`,
      namespace: opts.namespace ?? 'default',
      labels: { 'kubernetes.io/service-name': serviceName },
    },
    addressType,
    ports: ports.map((p) => ({ name: p.name ?? '', port: p.port, protocol: p.protocol ?? 'TCP' })),
    endpoints: eps.map((e) => ({
      addresses: [e.ip],
      conditions: {
        ...(e.ready === undefined ? {} : { ready: e.ready }),
        ...(e.serving === undefined ? {} : { serving: e.serving }),
        ...(e.terminating === undefined ? {} : { terminating: e.terminating }),
      },
      ...(e.node ? { nodeName: e.node } : {}),
      ...(e.zone ? { zone: e.zone } : {}),
      ...(e.hostname ? { hostname: e.hostname } : {}),
      ...(e.pod ? { targetRef: { kind: 'Pod', name: e.pod, namespace: opts.namespace ?? 'default' } } : {}),
      ...(e.hints
        ? {
            hints: {
              ...(e.hints.zones ? { forZones: e.hints.zones.map((name) => ({ name })) } : {}),
              ...(e.hints.nodes ? { forNodes: e.hints.nodes.map((name) => ({ name })) } : {}),
            },
          }
        : {}),
    })),
  });
}

/** A Node with InternalIP addresses. */
export function node(name: string, ips: string[], opts: { zone?: string; podCIDRs?: string[] } = {}): Node {
  return parse<Node>({
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name, ...(opts.zone ? { labels: { 'topology.kubernetes.io/zone': opts.zone } } : {}) },
    ...(opts.podCIDRs ? { spec: { podCIDRs: opts.podCIDRs } } : {}),
    status: { addresses: ips.map((address) => ({ type: 'InternalIP', address })) },
  });
}

let policySeq = 0;

/**
 * A ProxyPolicy (valid or not) through the real parser. Created in call order: each is
 * younger than the one before, unless `created` says otherwise.
 */
export function policy(
  name: string,
  spec: Raw,
  extra: { namespace?: string; created?: string; generation?: number } = {},
): PolicyObject {
  const r = parseResource(
    {
      apiVersion: 'nftproxy.dev/v1alpha1',
      kind: 'ProxyPolicy',
      metadata: {
        name,
        namespace: extra.namespace ?? 'default',
        generation: extra.generation ?? 1,
        uid: `uid-${name}`,
        creationTimestamp:
          extra.created ??
          new Date(Date.UTC(2026, 0, 1, 0, 0, ++policySeq)).toISOString().replace('.000', ''),
      },
      spec,
    },
    'test',
  );
  if (!r.parsed || r.parsed.kind !== 'ProxyPolicy')
    throw new Error(`policy ${name} not held: ${JSON.stringify(r.diagnostics)}`);
  return r.parsed.object;
}

/** A networking.k8s.io/v1 ServiceCIDR. */
export function serviceCIDR(name: string, cidrs: string[]): ServiceCIDR {
  return parse({
    apiVersion: 'networking.k8s.io/v1',
    kind: 'ServiceCIDR',
    metadata: { name },
    spec: { cidrs },
  });
}

/** A cluster state from objects of any kind. */
export function cluster(
  ...objects: (Service | EndpointSlice | Node | PolicyObject | ServiceCIDR)[]
): ClusterState {
  const state: ClusterState = { services: [], endpointSlices: [], nodes: [], serviceCIDRs: [], policies: [] };
  for (const o of objects) {
    if ('problems' in o) state.policies!.push(o);
    else if ('cidrs' in o) state.serviceCIDRs!.push(o);
    else if ('serviceName' in o) state.endpointSlices.push(o);
    else if ('podCIDRs' in o) state.nodes.push(o);
    else state.services.push(o);
  }
  return state;
}
