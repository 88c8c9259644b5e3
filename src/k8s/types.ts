/**
 * The cluster state a service proxy needs: the parts of v1 Service,
 * discovery.k8s.io/v1 EndpointSlice and v1 Node that decide how packets are forwarded.
 * Values are validated and canonical (addresses in the form nft prints).
 */

import type { PolicyObject } from '../api/types.js';

/** L4 protocols of a service port. */
export const Protocol = { TCP: 'TCP', UDP: 'UDP', SCTP: 'SCTP' } as const;
export type Protocol = (typeof Protocol)[keyof typeof Protocol];

/** Service types. */
export const ServiceType = {
  ClusterIP: 'ClusterIP',
  NodePort: 'NodePort',
  LoadBalancer: 'LoadBalancer',
  ExternalName: 'ExternalName',
} as const;
export type ServiceType = (typeof ServiceType)[keyof typeof ServiceType];

/** externalTrafficPolicy / internalTrafficPolicy values. */
export const TrafficPolicy = { Cluster: 'Cluster', Local: 'Local' } as const;
export type TrafficPolicy = (typeof TrafficPolicy)[keyof typeof TrafficPolicy];

/** Address families of EndpointSlices. */
export const AddressType = { IPv4: 'IPv4', IPv6: 'IPv6', FQDN: 'FQDN' } as const;
export type AddressType = (typeof AddressType)[keyof typeof AddressType];

/** Label and annotation keys the proxy reads. */
export const Labels = {
  /** On an EndpointSlice: the service it belongs to. */
  serviceName: 'kubernetes.io/service-name',
  /** On a Service: handled by another proxy; nftproxy leaves it alone. */
  serviceProxyName: 'service.kubernetes.io/service-proxy-name',
  /** On a Service or EndpointSlice: headless. */
  headless: 'service.kubernetes.io/headless',
  /** On a Node: its zone. */
  zone: 'topology.kubernetes.io/zone',
} as const;

/** Annotations nftproxy reads. */
export const Annotations = {
  /**
   * On an EndpointSlice (and Endpoints): when the change that caused this version happened
   * (RFC 3339), set by the EndpointSlice controller; the start of network programming latency.
   */
  lastChangeTriggerTime: 'endpoints.kubernetes.io/last-change-trigger-time',
} as const;

/** Identity and labels of an object. */
export interface ObjectMeta {
  namespace: string;
  name: string;
  uid?: string;
  resourceVersion?: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

/** One port of a service. */
export interface ServicePort {
  /** Empty for a single unnamed port. EndpointSlice ports are matched by this name. */
  name: string;
  protocol: Protocol;
  port: number;
  /** Number or IANA name; EndpointSlices carry the resolved number. */
  targetPort: number | string;
  /** For NodePort and LoadBalancer services, when allocated. */
  nodePort?: number;
}

/** A v1 Service, reduced to what the proxy uses. */
export interface Service {
  metadata: ObjectMeta;
  type: ServiceType;
  /** Canonical addresses; empty for headless and ExternalName services. */
  clusterIPs: string[];
  /** `spec.clusterIP: None`. */
  headless: boolean;
  ports: ServicePort[];
  externalIPs: string[];
  /** `status.loadBalancer.ingress[].ip`, except those with `ipMode: Proxy`. */
  loadBalancerIPs: string[];
  externalTrafficPolicy: TrafficPolicy;
  internalTrafficPolicy: TrafficPolicy;
  /** `spec.sessionAffinity`. */
  sessionAffinity: 'None' | 'ClientIP';
  /** `spec.sessionAffinityConfig.clientIP.timeoutSeconds`, default 10800 (3 hours). */
  sessionAffinityTimeoutSeconds: number;
  /** `spec.healthCheckNodePort`: LoadBalancer services with externalTrafficPolicy Local. */
  healthCheckNodePort?: number;
  /** `spec.trafficDistribution` (`PreferClose`, `PreferSameZone`, `PreferSameNode`). */
  trafficDistribution?: string;
  /** `spec.loadBalancerSourceRanges`, canonical CIDRs. */
  loadBalancerSourceRanges: string[];
}

/** A port of an EndpointSlice: the target port number behind a service port name. */
export interface EndpointPort {
  name: string;
  protocol: Protocol;
  /** Undefined means "all ports" (headless use); the proxy cannot forward to it. */
  port?: number;
}

/** Conditions of an endpoint. Unset `ready` and `serving` mean true, unset `terminating` false. */
export interface EndpointConditions {
  ready: boolean;
  serving: boolean;
  terminating: boolean;
}

/**
 * One endpoint (a pod) of a slice. The parser writes every field, undefined when absent: a
 * store holds hundreds of thousands, and one shape for all of them is the compact one.
 */
export interface Endpoint {
  /** The first of `addresses`, the only one consumers may use. Canonical. */
  address: string;
  conditions: EndpointConditions;
  // Present (possibly undefined) on every endpoint the parser makes: one object shape.
  nodeName?: string | undefined;
  zone?: string | undefined;
  hostname?: string | undefined;
  /** Name of the endpoint's target (`targetRef.name`, normally its Pod). */
  targetName?: string | undefined;
  /** Topology hints the EndpointSlice controller set: zones and nodes that should use this endpoint. */
  hints?: { forZones: string[]; forNodes: string[] } | undefined;
}

/** A discovery.k8s.io/v1 EndpointSlice of an IP address type. */
export interface EndpointSlice {
  metadata: ObjectMeta;
  /** From the `kubernetes.io/service-name` label. */
  serviceName: string;
  addressType: 'IPv4' | 'IPv6';
  ports: readonly EndpointPort[];
  endpoints: Endpoint[];
  /**
   * The `endpoints.kubernetes.io/last-change-trigger-time` annotation, epoch ms, when it holds
   * a valid time: when the change that caused this version happened.
   */
  triggerTime?: number;
}

/** A v1 Node, reduced to what the proxy uses. */
export interface Node {
  metadata: ObjectMeta;
  /** `status.addresses` of IP types (InternalIP, ExternalIP), canonical. */
  addresses: { type: string; address: string }[];
  podCIDRs: string[];
  /**
   * Why load balancers should stop sending this node traffic (KEP-3836): it is being deleted
   * (`metadata.deletionTimestamp`), or the cluster autoscaler is about to remove it (taint
   * `ToBeDeletedByClusterAutoscaler`). Absent: eligible.
   */
  draining?: string;
}

/**
 * A networking.k8s.io/v1 ServiceCIDR: a range the API server allocates ClusterIPs from.
 * Traffic to an address in one that no Service holds is dropped.
 */
export interface ServiceCIDR {
  metadata: ObjectMeta;
  /** `spec.cidrs`, canonical (one per family at most). */
  cidrs: string[];
}

/** Everything the compiler reads. */
export interface ClusterState {
  services: Service[];
  endpointSlices: EndpointSlice[];
  nodes: Node[];
  /** ServiceCIDR objects (clusters from 1.33 have them); with the settings' service CIDRs. */
  serviceCIDRs?: ServiceCIDR[];
  /** ProxyPolicies, valid or not (invalid ones carry their problems and select nothing). */
  policies?: PolicyObject[];
}

/** A problem found in input, tied to the object (and field) it concerns. */
export interface Diagnostic {
  severity: 'error' | 'warning';
  /** `Service default/web`, or `document` when no object could be identified. */
  object: string;
  /** Path of the offending field, e.g. `spec.ports[1].port`. */
  field?: string;
  message: string;
  /** Where the object came from, e.g. `manifests/web.yaml:12`. */
  origin?: string;
}

/** `Service default/web`. */
export function objectRef(kind: string, meta: { namespace?: string; name?: string }): string {
  const name = meta.name ?? '<unnamed>';
  return `${kind} ${meta.namespace ? `${meta.namespace}/${name}` : name}`;
}

/** One line: `error: Service default/web: spec.ports[1].port: not a valid port: "x" (web.yaml:3)`. */
export function formatDiagnostic(d: Diagnostic): string {
  const field = d.field ? `${d.field}: ` : '';
  const origin = d.origin ? ` (${d.origin})` : '';
  return `${d.severity}: ${d.object}: ${field}${d.message}${origin}`;
}
