/**
 * Parses Kubernetes objects (from YAML/JSON manifests or from the API) into the typed model.
 *
 * An object with any invalid field is rejected whole, with one diagnostic per problem that
 * names the object and the field and quotes the bad value; the caller skips it and goes on
 * with the rest. Kinds the proxy does not use are ignored without a word.
 */
import { canonicalIP, ipVersion, parseCIDR, formatCIDR } from '../net/ip.js';
import {
  API_VERSION as POLICY_API_VERSION,
  DEFAULT_AFFINITY_TIMEOUT_SECONDS,
  KIND as POLICY_KIND,
  MAX_AFFINITY_TIMEOUT_SECONDS,
  type PolicyObject,
} from '../api/types.js';
import { validateProxyPolicy } from '../api/validate.js';
import {
  AddressType,
  Annotations,
  type Diagnostic,
  type EndpointConditions,
  type Endpoint,
  type EndpointPort,
  type EndpointSlice,
  Labels,
  type Node,
  type ObjectMeta,
  objectRef,
  Protocol,
  type Service,
  type ServiceCIDR,
  type ServicePort,
  ServiceType,
  TrafficPolicy,
} from './types.js';

/** A parsed object of a kind the proxy uses. */
export type Parsed =
  | { kind: 'Service'; object: Service }
  | { kind: 'EndpointSlice'; object: EndpointSlice }
  | { kind: 'Node'; object: Node }
  | { kind: 'ServiceCIDR'; object: ServiceCIDR }
  | { kind: 'ProxyPolicy'; object: PolicyObject };

/** The outcome of parsing one object: the object if valid, and anything worth saying. */
export interface ParseResult {
  parsed?: Parsed;
  diagnostics: Diagnostic[];
}

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const quote = (v: unknown): string => (typeof v === 'string' ? JSON.stringify(v) : String(JSON.stringify(v)));

/**
 * A string of its own. V8's JSON.parse returns strings of 13 characters or more as slices of
 * the text it parsed: keeping one pod name keeps the whole list page it came in (MBs). What
 * the store keeps is copied out.
 */
function own(s: string): string {
  return s.length < 13 ? s : Buffer.from(s, 'utf8').toString('utf8');
}

/** The empty list every object without one shares (frozen: nothing may add to it). */
const EMPTY: never[] = Object.freeze([]) as unknown as never[];

/**
 * A list at its exact length. An array that grew by push has room for more (17 slots after
 * the first push, ~150 bytes for one element); the store holds hundreds of thousands.
 */
function fit<T>(a: T[]): T[] {
  return a.length === 0 ? EMPTY : a.slice();
}

/** Collects field errors for one object. */
class Reader {
  readonly problems: { field: string; message: string }[] = [];

  bad(field: string, message: string): undefined {
    this.problems.push({ field, message });
    return undefined;
  }

  obj(v: unknown, field: string): Obj | undefined {
    if (v === undefined || v === null) return undefined;
    return isObj(v) ? v : this.bad(field, `must be an object, got ${quote(v)}`);
  }

  arr(v: unknown, field: string): unknown[] {
    if (v === undefined || v === null) return [];
    if (Array.isArray(v)) return v;
    this.bad(field, `must be a list, got ${quote(v)}`);
    return [];
  }

  str(v: unknown, field: string): string | undefined {
    if (v === undefined || v === null) return undefined;
    return typeof v === 'string' ? own(v) : this.bad(field, `must be a string, got ${quote(v)}`);
  }

  bool(v: unknown, field: string, dflt: boolean): boolean {
    if (v === undefined || v === null) return dflt;
    if (typeof v === 'boolean') return v;
    this.bad(field, `must be true or false, got ${quote(v)}`);
    return dflt;
  }

  port(v: unknown, field: string): number | undefined {
    if (typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 65535) return v;
    return this.bad(field, `not a valid port number (1-65535): ${quote(v)}`);
  }

  ip(v: unknown, field: string): string | undefined {
    const s = this.str(v, field);
    if (s === undefined) return undefined;
    return canonicalIP(s) ?? this.bad(field, `not a valid IP address: ${quote(s)}`);
  }

  oneOf<T extends string>(v: unknown, field: string, values: readonly T[], dflt: T): T {
    if (v === undefined || v === null || v === '') return dflt;
    if (typeof v === 'string' && (values as readonly string[]).includes(v)) return v as T;
    this.bad(field, `must be one of ${values.join(', ')}, got ${quote(v)}`);
    return dflt;
  }

  protocol(v: unknown, field: string): Protocol {
    if (v === undefined || v === null) return Protocol.TCP;
    // Own keys only: `in` would also accept "constructor" and other prototype names.
    if (typeof v === 'string' && Object.hasOwn(Protocol, v)) return v as Protocol;
    this.bad(field, `unknown protocol ${quote(v)} (want TCP, UDP or SCTP)`);
    return Protocol.TCP;
  }

  stringMap(v: unknown, field: string): Record<string, string> {
    const o = this.obj(v, field);
    const out: Record<string, string> = {};
    for (const [k, val] of Object.entries(o ?? {})) {
      if (typeof val === 'string') out[own(k)] = own(val);
      else this.bad(`${field}.${k}`, `must be a string, got ${quote(val)}`);
    }
    return out;
  }
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const IANA_SVC_NAME = /^(?=.*[a-z])[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;

/**
 * The one copy of strings that repeat across many objects (node names, zones): a cluster of
 * 50,000 EndpointSlices names a few hundred nodes 275,000 times. Bounded: values that do not
 * repeat would otherwise fill it.
 */
const INTERNED = new Map<string, string>();
function intern(s: string | undefined): string | undefined {
  if (s === undefined) return undefined;
  const known = INTERNED.get(s);
  if (known !== undefined) return known;
  if (INTERNED.size >= 65536) INTERNED.clear();
  INTERNED.set(s, s);
  return s;
}

/** Endpoint conditions, one shared frozen object per combination. */
const CONDITIONS = new Map<number, EndpointConditions>();
function conditionsOf(ready: boolean, serving: boolean, terminating: boolean): EndpointConditions {
  const k = (ready ? 1 : 0) | (serving ? 2 : 0) | (terminating ? 4 : 0);
  let c = CONDITIONS.get(k);
  if (!c) CONDITIONS.set(k, (c = Object.freeze({ ready, serving, terminating })));
  return c;
}

/** One frozen copy of each list of slice ports: most slices of a cluster have the same few. */
const PORT_LISTS = new Map<string, readonly EndpointPort[]>();
function internPorts(ports: EndpointPort[]): readonly EndpointPort[] {
  const k = ports.map((p) => `${p.name}\u0000${p.protocol}\u0000${p.port ?? ''}`).join('\u0001');
  const known = PORT_LISTS.get(k);
  if (known) return known;
  if (PORT_LISTS.size >= 65536) PORT_LISTS.clear();
  const frozen = Object.freeze(ports.map((p) => Object.freeze({ ...p })));
  PORT_LISTS.set(k, frozen);
  return frozen;
}

/** The labels or annotations of objects that need none kept (shared, frozen). */
const NONE: Record<string, string> = Object.freeze({}) as Record<string, string>;

function readMeta(r: Reader, raw: Obj, namespaced: boolean): ObjectMeta {
  const m = r.obj(raw.metadata, 'metadata') ?? {};
  const name = r.str(m.name, 'metadata.name');
  if (!name) r.bad('metadata.name', 'is required');
  else if (name.length > 253 || !DNS_SUBDOMAIN.test(name))
    r.bad('metadata.name', `not a valid name: ${quote(name)}`);
  let namespace = '';
  if (namespaced) {
    namespace = r.str(m.namespace, 'metadata.namespace') || 'default';
    if (!DNS_LABEL.test(namespace)) r.bad('metadata.namespace', `not a valid namespace: ${quote(namespace)}`);
  }
  // uid and resourceVersion are not kept: nothing reads them, and an object that changed
  // only its resourceVersion is then equal to what the store holds (no sync for it).
  return {
    namespace,
    name: name ?? '',
    labels: r.stringMap(m.labels, 'metadata.labels'),
    annotations: r.stringMap(m.annotations, 'metadata.annotations'),
  };
}

function readServicePorts(r: Reader, spec: Obj, type: ServiceType): ServicePort[] {
  const ports: ServicePort[] = [];
  const raw = r.arr(spec.ports, 'spec.ports');
  const seenNames = new Set<string>();
  const seenPorts = new Set<string>();
  raw.forEach((p, i) => {
    const f = `spec.ports[${i}]`;
    const o = r.obj(p, f);
    if (!o) return;
    const name = r.str(o.name, `${f}.name`) ?? '';
    if (name && !DNS_LABEL.test(name)) r.bad(`${f}.name`, `not a valid port name: ${quote(name)}`);
    if (raw.length > 1 && !name) r.bad(`${f}.name`, 'is required when a service has more than one port');
    if (seenNames.has(name) && name) r.bad(`${f}.name`, `duplicate port name ${quote(name)}`);
    seenNames.add(name);
    const protocol = r.protocol(o.protocol, `${f}.protocol`);
    const port = r.port(o.port, `${f}.port`);
    if (port !== undefined) {
      if (seenPorts.has(`${protocol}/${port}`)) r.bad(`${f}.port`, `duplicate port ${port}/${protocol}`);
      seenPorts.add(`${protocol}/${port}`);
    }
    let targetPort: number | string | undefined = port;
    if (typeof o.targetPort === 'string') {
      if (IANA_SVC_NAME.test(o.targetPort) && o.targetPort.length <= 15) targetPort = o.targetPort;
      else r.bad(`${f}.targetPort`, `not a valid port number or name: ${quote(o.targetPort)}`);
    } else if (o.targetPort !== undefined && o.targetPort !== null && o.targetPort !== 0) {
      targetPort = r.port(o.targetPort, `${f}.targetPort`);
    }
    let nodePort: number | undefined;
    if (o.nodePort !== undefined && o.nodePort !== null && o.nodePort !== 0) {
      nodePort = r.port(o.nodePort, `${f}.nodePort`);
      if (nodePort !== undefined && type !== ServiceType.NodePort && type !== ServiceType.LoadBalancer) {
        r.bad(`${f}.nodePort`, `may only be set on NodePort and LoadBalancer services, not ${type}`);
      }
    }
    if (port !== undefined && targetPort !== undefined) {
      ports.push({ name, protocol, port, targetPort, ...(nodePort ? { nodePort } : {}) });
    }
  });
  return ports;
}

/** Parses a v1 Service; its lists at their exact length. */
function parseService(raw: Obj, r: Reader): Service {
  const s = readService(raw, r);
  s.clusterIPs = fit(s.clusterIPs);
  s.ports = fit(s.ports);
  s.externalIPs = fit(s.externalIPs);
  s.loadBalancerIPs = fit(s.loadBalancerIPs);
  s.loadBalancerSourceRanges = fit(s.loadBalancerSourceRanges);
  return s;
}

function readService(raw: Obj, r: Reader): Service {
  // Labels select policies; annotations are not read.
  const metadata = { ...readMeta(r, raw, true), annotations: NONE };
  const spec = r.obj(raw.spec, 'spec') ?? {};
  const type = r.oneOf(spec.type, 'spec.type', Object.values(ServiceType), ServiceType.ClusterIP);
  const service: Service = {
    metadata,
    type,
    clusterIPs: [],
    headless: false,
    ports: [],
    externalIPs: [],
    loadBalancerIPs: [],
    externalTrafficPolicy: r.oneOf(
      spec.externalTrafficPolicy,
      'spec.externalTrafficPolicy',
      Object.values(TrafficPolicy),
      'Cluster',
    ),
    internalTrafficPolicy: r.oneOf(
      spec.internalTrafficPolicy,
      'spec.internalTrafficPolicy',
      Object.values(TrafficPolicy),
      'Cluster',
    ),
    sessionAffinity: r.oneOf(spec.sessionAffinity, 'spec.sessionAffinity', ['None', 'ClientIP'], 'None'),
    sessionAffinityTimeoutSeconds: DEFAULT_AFFINITY_TIMEOUT_SECONDS,
    loadBalancerSourceRanges: [],
  };
  const clientIP = r.obj(
    r.obj(spec.sessionAffinityConfig, 'spec.sessionAffinityConfig')?.clientIP,
    'spec.sessionAffinityConfig.clientIP',
  );
  const timeout = clientIP?.timeoutSeconds;
  if (timeout !== undefined && timeout !== null) {
    if (
      typeof timeout === 'number' &&
      Number.isInteger(timeout) &&
      timeout > 0 &&
      timeout <= MAX_AFFINITY_TIMEOUT_SECONDS
    )
      service.sessionAffinityTimeoutSeconds = timeout;
    else
      r.bad(
        'spec.sessionAffinityConfig.clientIP.timeoutSeconds',
        `must be a whole number of seconds from 1 to ${MAX_AFFINITY_TIMEOUT_SECONDS}, got ${quote(timeout)}`,
      );
  }
  if (
    spec.healthCheckNodePort !== undefined &&
    spec.healthCheckNodePort !== null &&
    spec.healthCheckNodePort !== 0
  ) {
    const hc = r.port(spec.healthCheckNodePort, 'spec.healthCheckNodePort');
    if (hc) service.healthCheckNodePort = hc;
  }
  const td = r.str(spec.trafficDistribution, 'spec.trafficDistribution');
  if (td) service.trafficDistribution = td;
  if (type === ServiceType.ExternalName) return service;
  r.arr(spec.loadBalancerSourceRanges, 'spec.loadBalancerSourceRanges').forEach((v, i) => {
    const text = r.str(v, `spec.loadBalancerSourceRanges[${i}]`);
    if (text === undefined) return;
    const cidr = parseCIDR(text.trim());
    if (cidr) service.loadBalancerSourceRanges.push(formatCIDR(cidr));
    else r.bad(`spec.loadBalancerSourceRanges[${i}]`, `not a valid CIDR: ${quote(text)}`);
  });

  const rawIPs =
    spec.clusterIPs !== undefined && spec.clusterIPs !== null
      ? r.arr(spec.clusterIPs, 'spec.clusterIPs')
      : [spec.clusterIP];
  const field =
    spec.clusterIPs !== undefined && spec.clusterIPs !== null ? 'spec.clusterIPs' : 'spec.clusterIP';
  if (rawIPs[0] === 'None') {
    service.headless = true;
    return service;
  }
  if (rawIPs.length === 0 || rawIPs[0] === undefined || rawIPs[0] === null || rawIPs[0] === '') {
    r.bad(field, 'is required: a service proxy needs the allocated cluster IP');
  }
  rawIPs.forEach((v, i) => {
    if (v === undefined || v === null || v === '') return;
    const ip = r.ip(v, rawIPs.length > 1 || field === 'spec.clusterIPs' ? `spec.clusterIPs[${i}]` : field);
    if (!ip) return;
    if (service.clusterIPs.some((o) => ipVersion(o) === ipVersion(ip))) {
      r.bad(`spec.clusterIPs[${i}]`, `a second IPv${ipVersion(ip)} cluster IP: ${quote(v)}`);
    } else {
      service.clusterIPs.push(ip);
    }
  });
  service.ports = readServicePorts(r, spec, type);
  if (service.ports.length === 0 && r.problems.length === 0)
    r.bad('spec.ports', 'is required (at least one port)');
  r.arr(spec.externalIPs, 'spec.externalIPs').forEach((v, i) => {
    const ip = r.ip(v, `spec.externalIPs[${i}]`);
    if (ip && !service.externalIPs.includes(ip)) service.externalIPs.push(ip);
  });
  const lb = r.obj(r.obj(raw.status, 'status')?.loadBalancer, 'status.loadBalancer');
  r.arr(lb?.ingress, 'status.loadBalancer.ingress').forEach((v, i) => {
    const f = `status.loadBalancer.ingress[${i}]`;
    const o = r.obj(v, f);
    if (!o || o.ip === undefined || o.ip === null || o.ip === '') return; // hostname-only ingress
    const ip = r.ip(o.ip, `${f}.ip`);
    const ipMode = r.oneOf(o.ipMode, `${f}.ipMode`, ['VIP', 'Proxy'], 'VIP');
    // ipMode Proxy: the load balancer rewrites the destination, so the node must not
    // capture traffic to that address.
    if (ip && ipMode === 'VIP' && !service.loadBalancerIPs.includes(ip)) service.loadBalancerIPs.push(ip);
  });
  return service;
}

/** Parses a discovery.k8s.io/v1 EndpointSlice; FQDN slices yield undefined. */
function parseEndpointSlice(raw: Obj, r: Reader): EndpointSlice | undefined {
  const metadata = readMeta(r, raw, true);
  const addressType = r.oneOf(raw.addressType, 'addressType', Object.values(AddressType), 'IPv4');
  if (raw.addressType === undefined || raw.addressType === null) r.bad('addressType', 'is required');
  const serviceName = metadata.labels[Labels.serviceName] ?? '';
  if (!serviceName)
    r.bad(
      `metadata.labels["${Labels.serviceName}"]`,
      'is required: which service does this slice belong to?',
    );
  const ports: EndpointPort[] = [];
  r.arr(raw.ports, 'ports').forEach((p, i) => {
    const o = r.obj(p, `ports[${i}]`);
    if (!o) return;
    const name = r.str(o.name, `ports[${i}].name`) ?? '';
    const protocol = r.protocol(o.protocol, `ports[${i}].protocol`);
    const port = o.port === undefined || o.port === null ? undefined : r.port(o.port, `ports[${i}].port`);
    ports.push({ name, protocol, ...(port === undefined ? {} : { port }) });
  });
  const endpoints: Endpoint[] = [];
  const version = addressType === 'IPv6' ? 6 : 4;
  r.arr(raw.endpoints, 'endpoints').forEach((e, i) => {
    const f = `endpoints[${i}]`;
    const o = r.obj(e, f);
    if (!o) return;
    const addrs = r.arr(o.addresses, `${f}.addresses`);
    if (addrs.length === 0) return void r.bad(`${f}.addresses`, 'is required (at least one address)');
    if (addressType === AddressType.FQDN) return;
    const address = r.ip(addrs[0], `${f}.addresses[0]`);
    if (address && ipVersion(address) !== version) {
      return void r.bad(`${f}.addresses[0]`, `${quote(addrs[0])} is not an ${addressType} address`);
    }
    const c = r.obj(o.conditions, `${f}.conditions`) ?? {};
    const conditions = conditionsOf(
      r.bool(c.ready, `${f}.conditions.ready`, true),
      // Unset serving means true, as kube-proxy reads it (not "same as ready").
      r.bool(c.serving, `${f}.conditions.serving`, true),
      r.bool(c.terminating, `${f}.conditions.terminating`, false),
    );
    const nodeName = intern(r.str(o.nodeName, `${f}.nodeName`));
    const zone = intern(r.str(o.zone, `${f}.zone`));
    const hostname = r.str(o.hostname, `${f}.hostname`);
    const ref = r.obj(o.targetRef, `${f}.targetRef`);
    const h = r.obj(o.hints, `${f}.hints`);
    const hintNames = (key: 'forZones' | 'forNodes'): string[] =>
      r
        .arr(h?.[key], `${f}.hints.${key}`)
        .map((x, j) => r.str(r.obj(x, `${f}.hints.${key}[${j}]`)?.name, `${f}.hints.${key}[${j}].name`))
        .filter((x): x is string => !!x);
    const hints = h ? { forZones: hintNames('forZones'), forNodes: hintNames('forNodes') } : undefined;
    if (!address) return;
    // Every field, in one order: the store holds hundreds of thousands of these. Only the
    // name of the target (normally a Pod) is kept: weights match on it.
    endpoints.push({
      address,
      conditions,
      nodeName: nodeName || undefined,
      zone: zone || undefined,
      hostname: hostname || undefined,
      targetName: ref && typeof ref.name === 'string' ? own(ref.name) : undefined,
      hints,
    });
  });
  if (addressType === AddressType.FQDN) return undefined;
  // A slice's labels and annotations are read here and not kept, but for the change trigger
  // time: the store holds tens of thousands of slices.
  const stamp = metadata.annotations[Annotations.lastChangeTriggerTime];
  const trigger = stamp === undefined ? NaN : Date.parse(stamp);
  return {
    metadata: { namespace: metadata.namespace, name: metadata.name, labels: NONE, annotations: NONE },
    serviceName,
    addressType,
    ports: internPorts(ports),
    endpoints: fit(endpoints),
    ...(Number.isFinite(trigger) ? { triggerTime: trigger } : {}),
  };
}

/** Parses a v1 Node. */
function parseNode(raw: Obj, r: Reader): Node {
  const metadata = readMeta(r, raw, false);
  const status = r.obj(raw.status, 'status') ?? {};
  const addresses: Node['addresses'] = [];
  r.arr(status.addresses, 'status.addresses').forEach((a, i) => {
    const o = r.obj(a, `status.addresses[${i}]`);
    const type = r.str(o?.type, `status.addresses[${i}].type`);
    if (!o || (type !== 'InternalIP' && type !== 'ExternalIP')) return;
    const address = r.ip(o.address, `status.addresses[${i}].address`);
    if (address) addresses.push({ type, address });
  });
  const spec = r.obj(raw.spec, 'spec') ?? {};
  const podCIDRs: string[] = [];
  r.arr(spec.podCIDRs, 'spec.podCIDRs').forEach((c, i) => {
    const s = r.str(c, `spec.podCIDRs[${i}]`);
    const cidr = s === undefined ? undefined : parseCIDR(s);
    if (cidr) podCIDRs.push(formatCIDR(cidr));
    else if (s !== undefined) r.bad(`spec.podCIDRs[${i}]`, `not a valid CIDR: ${quote(s)}`);
  });
  const meta = r.obj(raw.metadata, 'metadata') ?? {};
  const taints = r.arr(spec.taints, 'spec.taints').map((t, i) => r.obj(t, `spec.taints[${i}]`)?.key);
  const draining =
    typeof meta.deletionTimestamp === 'string'
      ? `being deleted since ${meta.deletionTimestamp}`
      : taints.includes(TO_BE_DELETED_TAINT)
        ? `tainted ${TO_BE_DELETED_TAINT} (the cluster autoscaler is removing it)`
        : undefined;
  return { metadata, addresses, podCIDRs, ...(draining ? { draining } : {}) };
}

/** The cluster autoscaler's taint on a node it is about to remove. */
const TO_BE_DELETED_TAINT = 'ToBeDeletedByClusterAutoscaler';

/** Parses a networking.k8s.io/v1 ServiceCIDR. */
function parseServiceCIDR(raw: Obj, r: Reader): ServiceCIDR {
  const metadata = readMeta(r, raw, false);
  const spec = r.obj(raw.spec, 'spec') ?? {};
  const cidrs: string[] = [];
  r.arr(spec.cidrs, 'spec.cidrs').forEach((c, i) => {
    const s = r.str(c, `spec.cidrs[${i}]`);
    const cidr = s === undefined ? undefined : parseCIDR(s);
    if (cidr) cidrs.push(formatCIDR(cidr));
    else if (s !== undefined) r.bad(`spec.cidrs[${i}]`, `not a valid CIDR: ${quote(s)}`);
  });
  return { metadata, cidrs };
}

const KINDS: Record<string, { apiVersion: string; namespaced: boolean }> = {
  Service: { apiVersion: 'v1', namespaced: true },
  EndpointSlice: { apiVersion: 'discovery.k8s.io/v1', namespaced: true },
  Node: { apiVersion: 'v1', namespaced: false },
  ServiceCIDR: { apiVersion: 'networking.k8s.io/v1', namespaced: false },
  [POLICY_KIND]: { apiVersion: POLICY_API_VERSION, namespaced: true },
};

/**
 * A ProxyPolicy comes back parsed even when invalid (with its problems, also as
 * diagnostics), so that it gets `Accepted=False` in its status; only one without a name
 * cannot be held at all.
 */
function parsePolicy(raw: Obj, ref: string, at: { origin?: string }): ParseResult {
  const { policy, problems } = validateProxyPolicy(raw);
  const diagnostics: Diagnostic[] = problems.map((p) => ({
    severity: 'error',
    object: ref,
    field: p.field,
    message: p.message,
    ...at,
  }));
  if (policy)
    return { parsed: { kind: 'ProxyPolicy', object: { ...policy, problems: [] as [] } }, diagnostics };
  const m = isObj(raw.metadata) ? raw.metadata : {};
  const name = typeof m.name === 'string' ? m.name : '';
  if (!name || !DNS_SUBDOMAIN.test(name)) return { diagnostics };
  const namespace = typeof m.namespace === 'string' && m.namespace ? m.namespace : 'default';
  const generation = typeof m.generation === 'number' ? m.generation : 1;
  const metadata: PolicyObject['metadata'] = {
    namespace,
    name,
    generation,
    labels: {},
    ...(typeof m.uid === 'string' ? { uid: m.uid } : {}),
    ...(typeof m.resourceVersion === 'string' ? { resourceVersion: m.resourceVersion } : {}),
    ...(typeof m.creationTimestamp === 'string' ? { creationTimestamp: m.creationTimestamp } : {}),
  };
  return { parsed: { kind: 'ProxyPolicy', object: { metadata, problems } }, diagnostics };
}

/**
 * Parses one Kubernetes object of any kind. Services, EndpointSlices and Nodes come back
 * parsed if valid; other kinds are ignored; an object with problems comes back with one
 * diagnostic per problem and no `parsed`.
 */
export function parseResource(raw: unknown, origin?: string): ParseResult {
  const at = origin ? { origin } : {};
  if (!isObj(raw)) {
    return {
      diagnostics: [
        { severity: 'error', object: 'document', message: `not a Kubernetes object: ${quote(raw)}`, ...at },
      ],
    };
  }
  const kind = raw.kind;
  const apiVersion = raw.apiVersion;
  if (typeof kind !== 'string' || typeof apiVersion !== 'string') {
    return {
      diagnostics: [
        {
          severity: 'error',
          object: 'document',
          message: 'not a Kubernetes object: kind and apiVersion are required',
          ...at,
        },
      ],
    };
  }
  if (!Object.hasOwn(KINDS, kind)) return { diagnostics: [] };
  const known = KINDS[kind]!;
  const meta = isObj(raw.metadata) ? raw.metadata : {};
  const ref = objectRef(kind, {
    ...(typeof meta.name === 'string' ? { name: meta.name } : {}),
    ...(known.namespaced
      ? { namespace: typeof meta.namespace === 'string' && meta.namespace ? meta.namespace : 'default' }
      : {}),
  });
  if (apiVersion !== known.apiVersion) {
    return {
      diagnostics: [
        {
          severity: 'warning',
          object: ref,
          field: 'apiVersion',
          message: `ignored: nftproxy reads ${kind} ${known.apiVersion}, not ${quote(apiVersion)}`,
          ...at,
        },
      ],
    };
  }
  if (kind === POLICY_KIND) return parsePolicy(raw, ref, at);
  const r = new Reader();
  let parsed: Parsed | undefined;
  if (kind === 'Service') parsed = { kind, object: parseService(raw, r) };
  else if (kind === 'Node') parsed = { kind, object: parseNode(raw, r) };
  else if (kind === 'ServiceCIDR') parsed = { kind, object: parseServiceCIDR(raw, r) };
  else {
    const slice = parseEndpointSlice(raw, r);
    if (slice) parsed = { kind: 'EndpointSlice', object: slice };
  }
  if (r.problems.length) {
    return {
      diagnostics: r.problems.map((p) => ({
        severity: 'error',
        object: ref,
        field: p.field,
        message: p.message,
        ...at,
      })),
    };
  }
  return parsed ? { parsed, diagnostics: [] } : { diagnostics: [] };
}
