/**
 * Names of everything nftproxy creates in nftables. The ruleset layout is explained in
 * docs/architecture.md; keep the two in step.
 */
import type { Family } from '../nft/ir.js';

/** Both tables are called this: `ip nftproxy` and `ip6 nftproxy`. */
export const TABLE = 'nftproxy';

/** The families nftproxy programs, one table each. */
export const FAMILIES: readonly Family[] = ['ip', 'ip6'];

/** Base chains: where nftproxy hooks into the packet path. */
export const BaseChains = {
  /** DNAT of traffic arriving from pods and the outside. */
  natPrerouting: 'nat-prerouting',
  /** DNAT of traffic from processes on the node. */
  natOutput: 'nat-output',
  /** Masquerade of marked and hairpin traffic. */
  natPostrouting: 'nat-postrouting',
  /** Rejects new connections to local NodePorts and external IPs without endpoints. */
  filterInput: 'filter-input',
  /** Rejects routed new connections to services without endpoints or unused ClusterIP ports. */
  filterForward: 'filter-forward',
  /** Rejects the host's new connections to services without endpoints (before DNAT). */
  filterOutput: 'filter-output',
  /** Rejects the host's new connections to unused ClusterIP ports (after DNAT). */
  filterOutputPostDnat: 'filter-output-post-dnat',
} as const;

/** Regular chains, jumped to from the base chains. */
export const Chains = {
  /** Dispatch: VIP verdict map, then NodePorts. */
  services: 'services',
  /** Dispatch of traffic to a local address on a NodePort. */
  nodeports: 'nodeports',
  /** Sets the masquerade mark. */
  markForMasquerade: 'mark-for-masquerade',
  /** Masquerades marked and hairpin traffic, clearing the mark. */
  masquerading: 'masquerading',
  serviceEndpointsCheck: 'service-endpoints-check',
  nodeportEndpointsCheck: 'nodeport-endpoints-check',
  clusterIPsCheck: 'cluster-ips-check',
  /** TCP reset for TCP (answers every time), ICMP port unreachable otherwise. */
  reject: 'reject-chain',
} as const;

/** Named sets. */
export const Sets = {
  /** Every ClusterIP: masquerade of off-cluster sources, reject of unused ports. */
  clusterIPs: 'cluster-ips',
  /** The pod network (interval set); sources outside it are masqueraded to ClusterIPs. */
  clusterCIDRs: 'cluster-cidrs',
  /** Where NodePorts answer, when restricted (interval set). */
  nodeportAddresses: 'nodeport-addresses',
  /** External VIP . proto . port whose traffic is masqueraded (externalTrafficPolicy Cluster). */
  masqueradeServices: 'masquerade-services',
  /** NodePort proto . port whose traffic is masqueraded (externalTrafficPolicy Cluster). */
  masqueradeNodeports: 'masquerade-nodeports',
  /** Endpoint . itself: a pod reaching itself through a service is masqueraded. */
  hairpin: 'hairpin',
} as const;

/** Named maps. */
export const Maps = {
  /** VIP . proto . port -> goto the pick chain for the service port's endpoint count. */
  serviceIPs: 'service-ips',
  /** proto . port -> goto the NodePort pick chain. */
  serviceNodeports: 'service-nodeports',
  /** VIP . proto . port of service ports without endpoints -> goto reject. */
  noEndpointServices: 'no-endpoint-services',
  /** proto . port of NodePorts without endpoints -> goto reject. */
  noEndpointNodeports: 'no-endpoint-nodeports',
  /** VIP . proto . port . slot -> endpoint address . port. */
  backends: 'backends',
  /** proto . port . slot -> endpoint address . port. */
  nodeportBackends: 'nodeport-backends',
} as const;

/** The masquerade mark bit (the one kube-proxy uses). */
export const MASQUERADE_MARK = 0x4000;

/** Base chain priorities. Filter checks run before DNAT (-110) or after it (-90). */
export const Priority = {
  dstnat: -100,
  srcnat: 100,
  filterPreDnat: -110,
  filterPostDnat: -90,
} as const;

/** How a service port is reached: by its VIP (ClusterIP, external or LB IP), or a NodePort. */
export type DispatchKind = 'service' | 'nodeport';

/** Backend selection algorithms; each has its pick chains. */
export type SchedulerName = 'random';

/**
 * Pick chains for 1..N slots exist from the moment a table is created, whether used or
 * not. nft 1.0.6 cannot add a rule that uses an existing typeof map (see nft/diff.ts), so a
 * pick chain for a new slot count means replacing the table; pre-creating the common sizes
 * makes that rare. Cost measured at 10k services: +64 chains adds about 0.08 s to a full
 * load of about 0.9 s (docs/architecture.md).
 */
export const PRECREATED_PICK_SLOTS = 16;

/** `pick-random-3`, `nodeport-pick-random-3`: one chain per kind, scheduler and slot count. */
export function pickChainName(kind: DispatchKind, scheduler: SchedulerName, slots: number): string {
  return `${kind === 'nodeport' ? 'nodeport-' : ''}pick-${scheduler}-${slots}`;
}
