/**
 * What the operator tells the world after a sync, derived from the store: each ProxyPolicy's
 * result on this node (for its status) and the health checks of externalTrafficPolicy Local
 * services (for their healthCheckNodePort), and the Local policies left without a local endpoint
 * (for metrics).
 */
import type { ClusterStore } from '../k8s/store.js';
import { formatHostPort, versionOf } from '../net/ip.js';
import type { KnownElements } from '../nft/backend.js';
import type { Family } from '../nft/ir.js';
import type { RulesetBuilder } from '../proxy/builder.js';
import { Maps } from '../proxy/names.js';
import type { ProxyConfig } from '../proxy/config.js';
import { effectiveConfig } from '../proxy/compile.js';
import { ServiceType, TrafficPolicy, type Service } from '../k8s/types.js';
import { categorizeEndpoints } from '../proxy/endpoints.js';
import { selects } from '../api/select.js';
import { compareServiceKeys, proxied, unitLineCounts, unitLines } from '../proxy/service.js';
import type { EndpointCounterSample, LocalEndpointGaps } from './metrics.js';
import type { PolicyResult } from './policy-status.js';
import type { ServiceHealthState } from './service-health.js';

/** How the last sync went, as the policies' Programmed entry reports it. */
export interface SyncOutcome {
  ok: boolean;
  /** Why not, when not ok. */
  message?: string;
}

const serviceKey = (svc: Service) => `${svc.metadata.namespace}/${svc.metadata.name}`;

/**
 * Every ProxyPolicy's result on this node. A valid policy is programmed when the last sync
 * succeeded; an invalid one is never programmed (it reached no rule) and says why. A service
 * that two policies select counts for the winner and is a conflict for the loser. Costs the
 * services of the namespaces that have policies: nothing without policies.
 */
export function policyResults(store: ClusterStore, outcome: SyncOutcome): PolicyResult[] {
  return store.policyList().map((p) => {
    const { namespace, name, uid, generation } = p.metadata;
    const base = { namespace, name, ...(uid ? { uid } : {}), generation, problems: p.problems };
    if (p.problems.length || !p.spec) {
      return {
        ...base,
        servicesSelected: [],
        conflicts: new Map(),
        programmed: false,
        message: 'not accepted: nothing programmed',
      };
    }
    const selected: string[] = [];
    const conflicts = new Map<string, string>();
    for (const svc of store.servicesIn(namespace)) {
      if (!selects(p, svc)) continue;
      const winner = store.policyOf(svc).policy;
      if (winner && winner.metadata.name !== name) {
        conflicts.set(serviceKey(svc), `${namespace}/${winner.metadata.name}`);
      } else {
        selected.push(serviceKey(svc));
      }
    }
    return {
      ...base,
      servicesSelected: selected.sort(),
      conflicts,
      programmed: outcome.ok,
      message: outcome.ok
        ? `programmed for ${selected.length} service${selected.length === 1 ? '' : 's'}`
        : `last sync failed: ${outcome.message ?? 'unknown error'}`,
    };
  });
}

/**
 * The health check of one service on this node, if it has one: a proxied service with
 * externalTrafficPolicy Local and a healthCheckNodePort, with its ready endpoints on this node
 * (distinct addresses over all its ports), as kube-proxy counts them.
 */
export function healthCheckOf(
  store: ClusterStore,
  key: string,
  nodeName: string,
  serviceProxyName = '',
): ServiceHealthState | undefined {
  const svc = store.service(key);
  if (
    !svc ||
    !proxied(svc, serviceProxyName) ||
    svc.externalTrafficPolicy !== TrafficPolicy.Local ||
    !svc.healthCheckNodePort
  )
    return undefined;
  const local = new Set<string>();
  for (const slice of store.slicesOf(key)) {
    for (const ep of slice.endpoints) {
      if (ep.nodeName === nodeName && ep.conditions.ready) local.add(ep.address);
    }
  }
  return { port: svc.healthCheckNodePort, localEndpoints: local.size };
}

/**
 * The health checks this node serves, kept up to date a service at a time: each sync
 * recomputes the services it was asked to (all of them for a full one), so a report after a
 * partial sync costs what the sync touched, not the cluster.
 */
export class HealthChecks {
  private readonly checks = new Map<string, ServiceHealthState>();
  private complete = false;

  constructor(
    private readonly nodeName: string,
    private readonly serviceProxyName = '',
  ) {}

  /** Recomputes the services `keys` (every service when undefined, or before the first full pass). */
  update(store: ClusterStore, keys?: Iterable<string>): void {
    if (!keys || !this.complete) {
      this.checks.clear();
      keys = store.serviceKeys();
      this.complete = true;
    }
    for (const k of keys) {
      const check = healthCheckOf(store, k, this.nodeName, this.serviceProxyName);
      if (check) this.checks.set(k, check);
      else this.checks.delete(k);
    }
  }

  /** The checks now, by service key. */
  get current(): ReadonlyMap<string, ServiceHealthState> {
    return this.checks;
  }
}

/**
 * The services among `keys` (every service when undefined) whose Local traffic policies find
 * no endpoint on this node, as kube-proxy counts them for
 * `kubeproxy_sync_proxy_rules_no_local_endpoints_total`: per service port that has usable
 * endpoints in the cluster but none usable here, one `internal` for internalTrafficPolicy
 * Local and one `external` for externalTrafficPolicy Local (services reachable from outside:
 * not type ClusterIP). Services without such ports are left out. Cheap for services with
 * Cluster policies, so a full sync can afford every key.
 */
export function noLocalEndpoints(
  store: ClusterStore,
  nodeName: string,
  keys: Iterable<string> = store.serviceKeys(),
  serviceProxyName = '',
): Map<string, LocalEndpointGaps> {
  const out = new Map<string, LocalEndpointGaps>();
  for (const key of keys) {
    const svc = store.service(key);
    if (!svc || !proxied(svc, serviceProxyName)) continue;
    const internalLocal = svc.internalTrafficPolicy === TrafficPolicy.Local;
    const externalLocal =
      svc.externalTrafficPolicy === TrafficPolicy.Local && svc.type !== ServiceType.ClusterIP;
    if (!internalLocal && !externalLocal) continue;
    const slices = store.slicesOf(key);
    const gaps = { internal: 0, external: 0 };
    for (const sp of svc.ports) {
      // Topology only narrows `cluster` when it leaves something, so the node's zone is moot.
      const cat = categorizeEndpoints(sp, slices, { name: nodeName });
      if (!cat.cluster.length || cat.local.length) continue;
      if (internalLocal) gaps.internal++;
      if (externalLocal) gaps.external++;
    }
    if (gaps.internal || gaps.external) out.set(key, gaps);
  }
  return out;
}

/**
 * Settings that silently do less than the user likely meant, found once the cluster is read:
 * a node name no Node object has, and a family whose services have ClusterIPs but that has no
 * cluster CIDR. One line each, for the log at start.
 */
export function startWarnings(store: ClusterStore, settings: ProxyConfig): string[] {
  const out: string[] = [];
  const config = effectiveConfig(settings, {
    nodes: store.nodeList(),
    serviceCIDRs: store.serviceCIDRList(),
  });
  const source =
    config.detectLocalMode === 'NodeCIDR'
      ? "in this Node's spec.podCIDRs (detectLocalMode NodeCIDR)"
      : '(--cluster-cidr)';
  const node = store.nodeList().find((n) => n.metadata.name === config.nodeName);
  if (!node)
    out.push(
      `no Node object is named ${JSON.stringify(config.nodeName)} (--node, or NODE_NAME): this node's IPs, zone and draining state are unknown, so nodePortAddresses primary, topology hints, local endpoints and nodeEligible cannot work as meant`,
    );
  for (const version of [4, 6] as const) {
    // The interface modes tell pods apart in both families alike.
    if (config.podInterface || config.clusterCIDRs.some((c) => c.version === version)) continue;
    let services = 0;
    for (const key of store.serviceKeys()) {
      const svc = store.service(key)!;
      if (proxied(svc, config.serviceProxyName) && svc.clusterIPs.some((ip) => versionOf(ip) === version))
        services++;
    }
    if (!services) continue;
    const podCIDRs = node?.podCIDRs.filter((c) => versionOf(c.split('/')[0]!) === version) ?? [];
    out.push(
      `no IPv${version} cluster CIDR ${source}, but ${services} service${services === 1 ? ' has' : 's have'} IPv${version} ClusterIPs: off-cluster traffic to them is not masqueraded, and externalTrafficPolicy Local sends pods only to local endpoints` +
        (podCIDRs.length && config.detectLocalMode !== 'NodeCIDR'
          ? ` (this Node's podCIDRs: ${podCIDRs.join(', ')})`
          : ''),
    );
  }
  return out;
}

/** One backends map's element counters, as read from the kernel: line -> packets. */
export interface CounterRead {
  family: Family;
  set: string;
  counters: ReadonlyMap<string, number>;
}

/**
 * What the units put in each family's backends maps (services, NodePorts), by `family set`:
 * the counts at once (no line is made), the lines when first asked for.
 */
export function backendElements(builder: Pick<RulesetBuilder, 'units'>): Map<string, KnownElements> {
  const units = builder.units();
  const counts = new Map<string, number>();
  for (const u of units)
    unitLineCounts(u, (set, n) => {
      if (set === Maps.backends || set === Maps.nodeportBackends)
        counts.set(`${u.family} ${set}`, (counts.get(`${u.family} ${set}`) ?? 0) + n);
    });
  let lines: Map<string, string[]> | undefined;
  const linesOf = (k: string) => {
    if (!lines) {
      lines = new Map();
      for (const u of units)
        unitLines(u, (set, line) => {
          if (set !== Maps.backends && set !== Maps.nodeportBackends) return;
          const key = `${u.family} ${set}`;
          const list = lines!.get(key);
          if (list) list.push(line);
          else lines!.set(key, [line]);
        });
    }
    return lines.get(k) ?? [];
  };
  return new Map([...counts].map(([k, count]) => [k, { count, lines: () => linesOf(k) }]));
}

/**
 * The connection counters by service address and port and endpoint, summed over an endpoint's
 * slots (a weighted endpoint holds several, and the local pool its own), in service order.
 * Elements of no programmed unit (a sync under way) are left out.
 */
export function endpointSamples(
  builder: Pick<RulesetBuilder, 'owner'>,
  reads: readonly CounterRead[],
): EndpointCounterSample[] {
  const sums = new Map<string, EndpointCounterSample>();
  for (const { family, set, counters } of reads) {
    // `VIP . proto . port . slot` in backends; `proto . port . slot` for NodePorts.
    const fields = set === Maps.nodeportBackends ? 2 : 3;
    for (const [line, packets] of counters) {
      const [key, data] = line.split(' : ') as [string, string | undefined];
      const claim = key.split(' . ').slice(0, fields).join(' . ');
      const unit = builder.owner(family, claim);
      if (!unit || !data) continue;
      const [ip, port] = data.split(' . ') as [string, string];
      const endpoint = formatHostPort(ip, Number(port));
      const id = `${family} ${claim} ${endpoint}`;
      const known = sums.get(id);
      if (known) known.connections += packets;
      else
        sums.set(id, {
          service: unit.service,
          portName: unit.portName,
          address: unit.address ?? '*',
          protocol: unit.protocol,
          port: unit.port,
          endpoint,
          connections: packets,
        });
    }
  }
  const text = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
  return [...sums.values()].sort(
    (a, b) =>
      compareServiceKeys(a.service, b.service) ||
      text(a.address, b.address) ||
      a.port - b.port ||
      text(a.endpoint, b.endpoint),
  );
}
