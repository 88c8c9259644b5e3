/**
 * Names of everything nftproxy creates in nftables. The ruleset layout is explained in
 * docs/architecture.md; keep the two in step.
 */
import { MAGLEV_TABLE_SIZES } from '../api/types.js';
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
  /** Drops new connections from sources a service's source ranges refuse (before DNAT). */
  filterPrerouting: 'filter-prerouting',
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
  /** Source-range checks of external service addresses and NodePorts (new connections). */
  firewall: 'firewall-check',
  /** Records the endpoint a ClientIP-affinity connection got (postrouting, after DNAT). */
  affinityRecord: 'affinity-record',
} as const;

/** Named sets. */
export const Sets = {
  /** Every ClusterIP: masquerade of off-cluster sources, reject of unused ports. */
  clusterIPs: 'cluster-ips',
  /**
   * The ClusterIP ranges (interval set): a new connection to an address in them that is not
   * in `cluster-ips` is dropped, as kube-proxy does, rather than routed on.
   */
  serviceCIDRs: 'service-cidrs',
  /** The pod network (interval set); sources outside it are masqueraded to ClusterIPs. */
  clusterCIDRs: 'cluster-cidrs',
  /** Where NodePorts answer, when restricted (interval set). */
  nodeportAddresses: 'nodeport-addresses',
  /** External VIP . proto . port whose traffic is masqueraded (externalTrafficPolicy Cluster). */
  masqueradeServices: 'masquerade-services',
  /** NodePort proto . port whose traffic is masqueraded (externalTrafficPolicy Cluster). */
  masqueradeNodeports: 'masquerade-nodeports',
  /**
   * External VIP . proto . port of externalTrafficPolicy Local services: masqueraded when
   * the node itself connects (as kube-proxy does), since the endpoint may answer the node's
   * address by another path than the one the DNAT was made on. Pods and outside clients keep
   * their address.
   */
  masqueradeFromNode: 'masquerade-from-node',
  /** The same for NodePorts of externalTrafficPolicy Local services: proto . port. */
  masqueradeNodeportsFromNode: 'masquerade-nodeports-from-node',
  /** Endpoint . itself: a pod reaching itself through a service is masqueraded. */
  hairpin: 'hairpin',
  /** VIP . proto . port whose traffic is never masqueraded (ProxyPolicy `masquerade: never`). */
  noMasqueradeServices: 'no-masquerade-services',
  /** VIP . proto . port with ClientIP affinity: look the client up in `affinity` first. */
  affinityServices: 'affinity-services',
  /** proto . port of NodePorts with ClientIP affinity. */
  affinityNodeports: 'affinity-nodeports',
  /** External VIP . proto . port with a source allow list (interval set of the allowed sources in `firewall-allow`). */
  firewallServices: 'firewall-services',
  /** VIP . proto . port . source CIDR allowed. */
  firewallAllow: 'firewall-allow',
  /** VIP . proto . port . source CIDR refused. */
  firewallDeny: 'firewall-deny',
  /** NodePort proto . port with a source allow list. */
  firewallNodeports: 'firewall-nodeports',
  /** proto . port . source CIDR allowed to a NodePort. */
  firewallNodeportAllow: 'firewall-nodeport-allow',
  /** proto . port . source CIDR refused on a NodePort. */
  firewallNodeportDeny: 'firewall-nodeport-deny',
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
  /**
   * External VIP . proto . port of externalTrafficPolicy Local services -> goto the pick
   * chain of the node-local endpoints, or drop when there are none. Consulted for sources
   * outside the cluster only; pods and the node itself use `service-ips` (all endpoints).
   */
  localServiceIPs: 'local-service-ips',
  /** The same for NodePorts: proto . port -> local pick chain, or drop. */
  localServiceNodeports: 'local-service-nodeports',
  /**
   * ClientIP affinity: client . address . proto . port -> the endpoint it got. Dynamic,
   * filled by the kernel, entries expire after the service's timeout.
   */
  affinity: 'affinity',
  /** VIP . proto . port -> goto the chain that records affinity with the service's timeout. */
  affinityTimeouts: 'affinity-timeouts',
  /** NodePort proto . port -> goto the recording chain of its timeout. */
  affinityNodeportTimeouts: 'affinity-nodeport-timeouts',
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

/**
 * How a pick chain draws a slot; each has its pick chains. ProxyPolicy schedulers map onto
 * these: random and weighted use `random` (weights are slot counts), roundRobin `inc`,
 * sourceHash and maglev `hash` (maglev over a prime-sized table).
 */
export type SchedulerName = 'random' | 'inc' | 'hash';

/** Which endpoints a pick draws from: all usable ones, or this node's (offset slots). */
export type Pool = 'cluster' | 'local';

/**
 * Slots of the local pool start here, in the same backends maps as the cluster pool, so
 * externalTrafficPolicy Local needs no maps of its own: `numgen random mod N offset 65536`.
 */
export const LOCAL_SLOT_BASE = 0x10000;

/** Seed of `jhash` in hash pick chains: the same on every node, so a client maps alike everywhere. */
export const HASH_SEED = 0x6e667078;

/** Default size limit of the affinity map (clients x affinity service addresses). */
export const DEFAULT_AFFINITY_MAP_SIZE = 262144;

/** `affinity-10800`: the chain recording affinity with this timeout. */
export function affinityChainName(timeoutSeconds: number): string {
  return `affinity-${timeoutSeconds}`;
}

/**
 * Pick chains for 1..N slots exist from the moment a table is created, whether used or
 * not. nft 1.0.6 cannot add a rule that uses an existing typeof map (see nft/diff.ts), so a
 * pick chain for a new slot count means replacing the table; pre-creating the common sizes
 * makes that rare. Cost measured at 10k services: +64 chains adds about 0.08 s to a full
 * load of about 0.9 s (docs/architecture.md).
 */
export const PRECREATED_PICK_SLOTS = 16;

/**
 * The same for the local pool (externalTrafficPolicy Local): a node rarely runs more than a
 * few endpoints of one service.
 */
export const PRECREATED_LOCAL_PICK_SLOTS = 4;

/**
 * Every pick chain a table starts with: random, round-robin (`inc`) and hash picks of 1..16
 * slots (1..4 in the local pool), and hash picks of each Maglev table size, for ClusterIP
 * and NodePort dispatch. So a ProxyPolicy that switches a service's scheduler is an
 * incremental transaction, unless it needs more slots than these. 140 chains per family
 * cost about 15 ms in a full load (`nft -f` of 60 vs 210 one-rule pick chains in a
 * namespace: 17-41 ms vs 25-37 ms).
 */
export function precreatedPicks(): PickSpec[] {
  const out: PickSpec[] = [];
  for (const kind of ['service', 'nodeport'] as const) {
    for (const [pool, max] of [
      ['cluster', PRECREATED_PICK_SLOTS],
      ['local', PRECREATED_LOCAL_PICK_SLOTS],
    ] as const) {
      for (const scheduler of ['random', 'inc', 'hash'] as const) {
        for (let slots = 1; slots <= max; slots++) out.push({ kind, scheduler, slots, pool });
      }
      for (const slots of MAGLEV_TABLE_SIZES) out.push({ kind, scheduler: 'hash', slots, pool });
    }
  }
  return out;
}

/** A pick chain: what it dispatches, how it draws, how many slots, from which pool. */
export interface PickSpec {
  kind: DispatchKind;
  scheduler: SchedulerName;
  slots: number;
  pool: Pool;
}

/**
 * `pick-random-3`, `nodeport-pick-hash-251`, `pick-random-2-local`: one chain per kind,
 * scheduler, slot count and pool, shared by every service port that needs it.
 */
export function pickChainName(p: PickSpec): string {
  return `${p.kind === 'nodeport' ? 'nodeport-' : ''}pick-${p.scheduler}-${p.slots}${p.pool === 'local' ? '-local' : ''}`;
}
