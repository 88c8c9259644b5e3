/**
 * The compiler: cluster state + node settings -> the desired nftables ruleset.
 *
 * Pure: no I/O, same input gives the same output. The shape is flat (docs/architecture.md):
 * a fixed set of chains, and per service only map and set elements. Dispatch is one verdict
 * map lookup on `daddr . l4proto . dport` that jumps to a pick chain shared by every service
 * port with the same number of endpoints; the pick chain looks the endpoint up in one shared
 * backends map keyed by `VIP . proto . port . random slot`.
 *
 * `compile` builds everything at once; the control plane keeps a RulesetBuilder and feeds it
 * one service at a time. Both go through the same builder.
 */
import type { Ruleset } from '../nft/ruleset.js';
import { normalizeCIDRs, parseCIDR, parseIP } from '../net/ip.js';
import { type ClusterState, type Diagnostic, type EndpointSlice, Labels } from '../k8s/types.js';
import type { PolicyObject } from '../api/types.js';
import type { NodeInfo } from './endpoints.js';
import { policyFor } from '../api/select.js';
import type { ProxyConfig } from './config.js';
import { type BuilderStats, RulesetBuilder } from './builder.js';
import {
  compareServiceKeys,
  compileService,
  type DispatchUnit,
  proxied,
  type ServiceContext,
  type ServiceContribution,
  serviceKey,
} from './service.js';

export type { DispatchEntry } from './service.js';

/** Figures about one compilation, for logs and metrics. */
export interface CompileStats extends BuilderStats {
  /** Services skipped on purpose: headless, ExternalName, another proxy's. */
  skipped: number;
}

/** The desired ruleset and what was found on the way. */
export interface CompileResult {
  /** The compact desired state the ruleset was built from. */
  builder: RulesetBuilder;
  ruleset: Ruleset;
  diagnostics: Diagnostic[];
  stats: CompileStats;
  /** Every programmed dispatch unit (entry and what its lines are made of), by service. */
  entries: DispatchUnit[];
}

/** This node's IPs: from the settings, else from its Node object. */
export function nodeIPsOf(state: Pick<ClusterState, 'nodes'>, config: ProxyConfig): string[] {
  if (config.nodeIPs.length) return config.nodeIPs;
  const node = state.nodes.find((n) => n.metadata.name === config.nodeName);
  return node?.addresses.map((a) => a.address) ?? [];
}

/**
 * The settings completed from the cluster: the service CIDRs given plus those of the
 * ServiceCIDR objects; with detectLocalMode NodeCIDR, the pod network is this node's
 * `spec.podCIDRs` (traffic from other nodes' pods then counts as off-cluster, as in kube-proxy).
 */
export function effectiveConfig(
  config: ProxyConfig,
  state: Pick<ClusterState, 'serviceCIDRs' | 'nodes'>,
): ProxyConfig {
  let out = config;
  const objects = (state.serviceCIDRs ?? []).flatMap((o) => o.cidrs.map((c) => parseCIDR(c)!));
  if (objects.length) out = { ...out, serviceCIDRs: normalizeCIDRs([...config.serviceCIDRs, ...objects]) };
  if (config.detectLocalMode === 'NodeCIDR') {
    const node = state.nodes.find((n) => n.metadata.name === config.nodeName);
    out = { ...out, clusterCIDRs: normalizeCIDRs((node?.podCIDRs ?? []).map((c) => parseCIDR(c)!)) };
  }
  return out;
}

/**
 * What every service's compile reads besides the service and its policy: this node (name,
 * zone, IPs) and the service CIDRs, from the completed settings (`effectiveConfig`).
 */
export function serviceContextOf(
  state: Pick<ClusterState, 'nodes'>,
  config: ProxyConfig,
): Omit<ServiceContext, 'policy'> {
  return {
    node: nodeInfoOf(state, config),
    nodeIPs: nodeIPsOf(state, config),
    serviceCIDRs: config.serviceCIDRs,
  };
}

/** This node's name and zone (`topology.kubernetes.io/zone` of its Node object). */
export function nodeInfoOf(state: Pick<ClusterState, 'nodes'>, config: ProxyConfig): NodeInfo {
  const node = state.nodes.find((n) => n.metadata.name === config.nodeName);
  const zone = node?.metadata.labels[Labels.zone];
  return { name: config.nodeName, ...(zone ? { zone } : {}) };
}

/** EndpointSlices by the key of the service they name. */
export function slicesByService(slices: readonly EndpointSlice[]): Map<string, EndpointSlice[]> {
  const out = new Map<string, EndpointSlice[]>();
  for (const s of slices) {
    const k = serviceKey(s.metadata.namespace, s.serviceName);
    let list = out.get(k);
    if (!list) out.set(k, (list = []));
    list.push(s);
  }
  return out;
}

/** Where a whole-ruleset compile reads its services from: the store, or a ClusterState. */
export interface ServiceSource {
  /** Every service key. */
  keys(): Iterable<string>;
  /** What the service contributes (undefined: not proxied, or gone). */
  contribution(key: string): ServiceContribution | undefined;
}

/**
 * Compiles every service of `source` into a new builder, in namespace/name order (the order
 * that decides contested addresses). The one compile loop: full syncs and `compile` use it.
 */
export function buildRuleset(config: ProxyConfig, nodeIPs: string[], source: ServiceSource): RulesetBuilder {
  const builder = new RulesetBuilder(config, nodeIPs);
  builder.recording = false;
  const keys = [...source.keys()].sort(compareServiceKeys);
  for (const key of keys) builder.setService(key, source.contribution(key));
  builder.recording = true;
  builder.takeDelta();
  return builder;
}

/** A ServiceSource over a ClusterState. */
export function stateSource(state: ClusterState, config: ProxyConfig): ServiceSource & { skipped: number } {
  const slices = slicesByService(state.endpointSlices);
  const context = serviceContextOf(state, config);
  const policies = new Map<string, PolicyObject[]>();
  for (const p of state.policies ?? []) {
    const list = policies.get(p.metadata.namespace) ?? [];
    list.push(p);
    policies.set(p.metadata.namespace, list);
  }
  const services = new Map(
    state.services.map((svc) => [serviceKey(svc.metadata.namespace, svc.metadata.name), svc]),
  );
  let skipped = 0;
  for (const svc of services.values()) if (!proxied(svc, config.serviceProxyName)) skipped++;
  return {
    skipped,
    keys: () => services.keys(),
    contribution: (key) => {
      const svc = services.get(key);
      if (!svc || !proxied(svc, config.serviceProxyName)) return undefined;
      const { policy } = policyFor(policies.get(svc.metadata.namespace) ?? [], svc);
      return compileService(svc, slices.get(key) ?? [], { ...context, ...(policy ? { policy } : {}) });
    },
  };
}

/** Compiles the whole cluster state into the desired ruleset. */
export function compile(state: ClusterState, settings: ProxyConfig): CompileResult {
  const config = effectiveConfig(settings, state);
  const source = stateSource(state, config);
  const builder = buildRuleset(config, nodeIPsOf(state, config), source);
  return {
    builder,
    ruleset: builder.ruleset(),
    diagnostics: builder.diagnostics(),
    stats: { ...builder.stats(), skipped: source.skipped },
    entries: builder.units(),
  };
}

/** The addresses where this ruleset's tracer should consider traffic "local". */
export function localAddresses(state: Pick<ClusterState, 'nodes'>, config: ProxyConfig): string[] {
  return [...nodeIPsOf(state, config), '127.0.0.1', '::1'].filter((ip) => parseIP(ip));
}
