/**
 * The cluster as the proxy last heard of it: valid Services, EndpointSlices and this node's
 * Node, from any source. Every change reports what it makes dirty, which is what the sync
 * loop recompiles.
 */
import { irEqual } from '../nft/ruleset.js';
import type { PolicyObject } from '../api/types.js';
import { policyFor, selects } from '../api/select.js';
import type { Parsed } from './parse.js';
import {
  type ClusterState,
  type EndpointSlice,
  Labels,
  type Node,
  type Service,
  type ServiceCIDR,
} from './types.js';

/** Kinds the store holds. */
export type StoreKind = Parsed['kind'];

/** What a change made dirty. */
export interface Dirty {
  /** Keys (`namespace/name`) of services to recompile. */
  services: string[];
  /**
   * Something every service depends on changed (this node's addresses, pod CIDRs or zone, the
   * service CIDRs): everything must be recompiled.
   */
  node: boolean;
  /** Keys of ProxyPolicies whose status may have changed. */
  policies?: string[];
}

/**
 * A change to a service's endpoints that no sync has programmed yet: what network programming
 * latency is measured from, and what a sync's trace links to.
 */
export interface EndpointChange {
  /** Service key, `namespace/name`. */
  service: string;
  /** EndpointSlice key, `namespace/name`. */
  slice: string;
  /** The slice's last-change-trigger-time (epoch ms), when it has a valid one. */
  triggerTime?: number;
  /** When the change reached the store (epoch ms). */
  receivedAt: number;
}

const key = (namespace: string, name: string) => `${namespace}/${name}`;
const NOTHING: Dirty = { services: [], node: false };

/** Holds the current objects. */
export class ClusterStore {
  private readonly services = new Map<string, Service>();
  /** Service keys by namespace (policies select within one). */
  private readonly servicesByNamespace = new Map<string, Set<string>>();
  private readonly slices = new Map<string, EndpointSlice>();
  /** The slices naming each service: an array, a service has few (usually one). */
  private readonly slicesByService = new Map<string, EndpointSlice[]>();
  private readonly nodes = new Map<string, Node>();
  private readonly serviceCIDRObjects = new Map<string, ServiceCIDR>();
  /** ProxyPolicies by namespace, then name. */
  private readonly policies = new Map<string, Map<string, PolicyObject>>();

  /** Endpoint changes not yet programmed, by service key. */
  private readonly pending = new Map<string, EndpointChange[]>();

  /** `nodeName`: the Node object that matters (this node's). `now`: the clock (epoch ms). */
  constructor(
    private readonly nodeName: string,
    private readonly now: () => number = Date.now,
  ) {}

  /** Adds or replaces an object. Unchanged objects make nothing dirty. */
  upsert(p: Parsed): Dirty {
    const { namespace, name } = p.object.metadata;
    const k = key(namespace, name);
    switch (p.kind) {
      case 'Service': {
        const old = this.services.get(k);
        if (old && irEqual(old, p.object)) return NOTHING;
        this.services.set(k, p.object);
        let inNs = this.servicesByNamespace.get(namespace);
        if (!inNs) this.servicesByNamespace.set(namespace, (inNs = new Set()));
        inNs.add(k);
        return { services: [k], node: false };
      }
      case 'EndpointSlice': {
        const old = this.slices.get(k);
        if (old && irEqual(old, p.object)) return NOTHING;
        if (old) this.unindex(old);
        this.slices.set(k, p.object);
        const svc = key(namespace, p.object.serviceName);
        const bySvc = this.slicesByService.get(svc);
        if (bySvc) bySvc.push(p.object);
        else this.slicesByService.set(svc, [p.object]);
        const services = [svc];
        if (old && old.serviceName !== p.object.serviceName) services.push(key(namespace, old.serviceName));
        for (const s of services) this.changed(s, k, p.object);
        return { services, node: false };
      }
      case 'Node': {
        const old = this.nodes.get(name);
        if (old && irEqual(old, p.object)) return NOTHING;
        this.nodes.set(name, p.object);
        const mine =
          name === this.nodeName &&
          (!irEqual(old?.addresses, p.object.addresses) ||
            !irEqual(old?.podCIDRs, p.object.podCIDRs) ||
            old?.metadata.labels[Labels.zone] !== p.object.metadata.labels[Labels.zone]);
        return { services: [], node: mine };
      }
      case 'ServiceCIDR': {
        const old = this.serviceCIDRObjects.get(name);
        if (old && irEqual(old.cidrs, p.object.cidrs)) return NOTHING;
        this.serviceCIDRObjects.set(name, p.object);
        return { services: [], node: true };
      }
      case 'ProxyPolicy': {
        let inNs = this.policies.get(namespace);
        const old = inNs?.get(name);
        if (old && irEqual(old, p.object)) return NOTHING;
        if (!inNs) this.policies.set(namespace, (inNs = new Map()));
        inNs.set(name, p.object);
        return this.policyDirty(namespace, [old, p.object], k);
      }
    }
  }

  /** A policy changed: the services it selected or selects now, and its status. */
  private policyDirty(namespace: string, versions: (PolicyObject | undefined)[], k: string): Dirty {
    const services: string[] = [];
    for (const svc of this.servicesIn(namespace)) {
      if (versions.some((v) => v && selects(v, svc)))
        services.push(key(svc.metadata.namespace, svc.metadata.name));
    }
    return { services, node: false, policies: [k] };
  }

  /** Removes an object, if present. */
  remove(kind: StoreKind, namespace: string, name: string): Dirty {
    const k = key(namespace, name);
    if (kind === 'Service') {
      if (!this.services.delete(k)) return NOTHING;
      const inNs = this.servicesByNamespace.get(namespace)!;
      inNs.delete(k);
      if (inNs.size === 0) this.servicesByNamespace.delete(namespace);
      return { services: [k], node: false };
    }
    if (kind === 'Node')
      return this.nodes.delete(name) ? { services: [], node: name === this.nodeName } : NOTHING;
    if (kind === 'ServiceCIDR')
      return this.serviceCIDRObjects.delete(name) ? { services: [], node: true } : NOTHING;
    if (kind === 'ProxyPolicy') {
      const inNs = this.policies.get(namespace);
      const old = inNs?.get(name);
      if (!old) return NOTHING;
      inNs!.delete(name);
      if (inNs!.size === 0) this.policies.delete(namespace);
      return this.policyDirty(namespace, [old], k);
    }
    const old = this.slices.get(k);
    if (!old) return NOTHING;
    this.slices.delete(k);
    this.unindex(old);
    const svc = key(namespace, old.serviceName);
    this.changed(svc, k);
    return { services: [svc], node: false };
  }

  private changed(service: string, slice: string, now?: EndpointSlice): void {
    const triggerTime = now?.triggerTime;
    const change: EndpointChange = {
      service,
      slice,
      ...(triggerTime !== undefined ? { triggerTime } : {}),
      receivedAt: this.now(),
    };
    const list = this.pending.get(service);
    if (list) list.push(change);
    else this.pending.set(service, [change]);
  }

  /**
   * The endpoint changes not yet programmed, of these services or of all. A sync reads them
   * before it compiles and forgets exactly those once its transaction succeeded, so changes
   * that arrive meanwhile wait for the next sync.
   */
  endpointChanges(services?: Iterable<string>): EndpointChange[] {
    if (!services) return [...this.pending.values()].flat();
    return [...services].flatMap((s) => this.pending.get(s) ?? []);
  }

  /** Forgets these endpoint changes (they are programmed now). */
  forgetEndpointChanges(changes: readonly EndpointChange[]): void {
    const done = new Set(changes);
    for (const service of new Set(changes.map((c) => c.service))) {
      const left = this.pending.get(service)?.filter((c) => !done.has(c)) ?? [];
      if (left.length) this.pending.set(service, left);
      else this.pending.delete(service);
    }
  }

  private unindex(slice: EndpointSlice): void {
    const svc = key(slice.metadata.namespace, slice.serviceName);
    const bySvc = this.slicesByService.get(svc);
    if (!bySvc) return;
    const i = bySvc.indexOf(slice);
    if (i >= 0) bySvc.splice(i, 1);
    if (bySvc.length === 0) this.slicesByService.delete(svc);
  }

  /** The service with this key, if known. */
  service(k: string): Service | undefined {
    return this.services.get(k);
  }

  /** The services of one namespace. */
  *servicesIn(namespace: string): IterableIterator<Service> {
    for (const k of this.servicesByNamespace.get(namespace) ?? []) yield this.services.get(k)!;
  }

  /** The slices naming the service with this key. */
  slicesOf(k: string): readonly EndpointSlice[] {
    return this.slicesByService.get(k) ?? [];
  }

  /** The keys (`namespace/name`, or the name of a Node) of every object of a kind held. */
  keysOf(kind: StoreKind): Iterable<string> {
    switch (kind) {
      case 'Service':
        return this.services.keys();
      case 'EndpointSlice':
        return this.slices.keys();
      case 'Node':
        return [...this.nodes.keys()].map((n) => `/${n}`);
      case 'ServiceCIDR':
        return [...this.serviceCIDRObjects.keys()].map((n) => `/${n}`);
      case 'ProxyPolicy':
        return [...this.policies.values()].flatMap((m) =>
          [...m.values()].map((p) => key(p.metadata.namespace, p.metadata.name)),
        );
    }
  }

  /** The valid ProxyPolicy governing a service, and the others that select it too. */
  policyOf(svc: Service): { policy?: PolicyObject; others: PolicyObject[] } {
    const inNs = this.policies.get(svc.metadata.namespace);
    return inNs ? policyFor(inNs.values(), svc) : { others: [] };
  }

  /** Every ProxyPolicy, valid or not. */
  policyList(): PolicyObject[] {
    return [...this.policies.values()].flatMap((m) => [...m.values()]);
  }

  /** Whether any ProxyPolicy exists in a namespace. */
  hasPolicies(namespace: string): boolean {
    return this.policies.has(namespace);
  }

  /** Why this node should get no load balancer traffic, when it should not (see Node.draining). */
  nodeDraining(): string | undefined {
    return this.nodes.get(this.nodeName)?.draining;
  }

  /** The Node objects known (normally just this node's). */
  nodeList(): Node[] {
    return [...this.nodes.values()];
  }

  /** The ServiceCIDR objects known. */
  serviceCIDRList(): ServiceCIDR[] {
    return [...this.serviceCIDRObjects.values()];
  }

  /** Every service key. */
  serviceKeys(): IterableIterator<string> {
    return this.services.keys();
  }

  /** All objects, as the compiler takes them. */
  state(): ClusterState {
    return {
      services: [...this.services.values()],
      endpointSlices: [...this.slices.values()],
      nodes: [...this.nodes.values()],
      serviceCIDRs: this.serviceCIDRList(),
      policies: this.policyList(),
    };
  }

  /** Object counts, for logs and metrics. */
  counts(): { services: number; endpointSlices: number; nodes: number; policies: number } {
    return {
      services: this.services.size,
      endpointSlices: this.slices.size,
      nodes: this.nodes.size,
      policies: this.policyList().length,
    };
  }
}
