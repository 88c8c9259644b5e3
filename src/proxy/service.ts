/**
 * What one service puts into the ruleset: for each of its addresses (ClusterIP, external
 * IPs, load balancer IPs, NodePorts) and ports, a dispatch unit with its map and set
 * elements. Pure.
 */
import type { Family } from '../nft/ir.js';
import { formatHostPort, versionOf } from '../net/ip.js';
import {
  type Diagnostic,
  type EndpointSlice,
  Labels,
  objectRef,
  type Service,
  ServiceType,
  TrafficPolicy,
} from '../k8s/types.js';
import { type CIDR, intersectCIDRs, normalizeCIDRs, parseCIDR } from '../net/ip.js';
import type { PolicyObject, Scheduler } from '../api/types.js';
import { ipsOf } from './config.js';
import { type Backend, categorizeEndpoints, type EndpointCategories, type NodeInfo } from './endpoints.js';
import { FAMILY_INFO, PROTO } from './family.js';
import {
  affinityChainName,
  Chains,
  type DispatchKind,
  FAMILIES,
  LOCAL_SLOT_BASE,
  Maps,
  pickChainName,
  type PickSpec,
  type Pool,
  PRECREATED_PICK_SLOTS,
  Sets,
} from './names.js';
import { serviceBehaviour, slotTable, type SlotTable } from './policy.js';
import { cidrText } from './table.js';

/** One programmed address of a service port: who owns a dispatch entry. */
export interface DispatchEntry {
  family: Family;
  kind: 'clusterIP' | 'externalIP' | 'loadBalancerIP' | 'nodePort';
  /** The VIP; absent for NodePorts (every local address). */
  address?: string;
  protocol: 'tcp' | 'udp' | 'sctp';
  port: number;
  /** `namespace/name` of the service. */
  service: string;
  portName: string;
  /**
   * The endpoints this address forwards to (for externalTrafficPolicy Local: those that pods
   * and the node itself reach). Empty: see `verdict`.
   */
  backends: Backend[];
  /** externalTrafficPolicy Local, external addresses: what clients outside the cluster reach. */
  localBackends?: Backend[];
  /** `forward`, or what new connections get when there is no endpoint to forward to. */
  verdict: 'forward' | 'reject' | 'drop';
  /** ProxyPolicy scheduler in force. */
  scheduler: Scheduler;
  /** Slots of the pick (weights and Maglev tables make more slots than endpoints). */
  slots: number;
  /** Seconds of ClientIP affinity, when on. */
  affinityTimeout?: number;
  /** `namespace/name` of the ProxyPolicy in force. */
  policy?: string;
  /** Topology hints in use for `backends`. */
  topology: EndpointCategories['topology'];
}

/**
 * Elements of one named set or map of the unit's family table, as element lines (the
 * canonical nft text of each element) joined by `\n`: one string per set, not per element.
 */
export interface SetLines {
  set: string;
  lines: string;
  /** How many lines. */
  count: number;
}

/**
 * Elements several units may write (a pod behind two services is one hairpin pair), as the
 * keys their lines are made of (`sharedLine`): the endpoint addresses of hairpin pairs, the
 * ClusterIP of `cluster-ips`. Reference-counted by key.
 */
export interface SharedKeys {
  set: string;
  keys: readonly string[];
}

/** The line of a shared element from its key. */
export function sharedLine(set: string, key: string): string {
  return set === Sets.hairpin ? `${key} . ${key}` : key;
}

/**
 * Everything one address (or NodePort) of one service port puts in a table. Units are the
 * grain of conflict handling: two services cannot own the same VIP:port or NodePort.
 */
export interface DispatchUnit {
  family: Family;
  /** Conflict key: `ip service 10.0.0.1 . tcp . 80` or `ip nodeport tcp . 30080`. */
  claim: string;
  /** For messages: `10.0.0.1:80/TCP`, `NodePort 30080/TCP`. */
  label: string;
  /** Elements only this unit writes: their keys start with its address and port. */
  owned: SetLines[];
  /** Elements other units may write too (hairpin pairs, cluster IPs): reference-counted. */
  shared: SharedKeys[];
  entry: DispatchEntry;
  /** The pick chains the unit's dispatch entries jump to. */
  picks: PickSpec[];
  /** The affinity recording chain it needs (seconds), when affinity is on. */
  affinityTimeout?: number;
}

/** What one service contributes to the ruleset. */
export interface ServiceContribution {
  units: DispatchUnit[];
  /** Problems and unsupported fields of this service (not conflicts with others). */
  diagnostics: Diagnostic[];
}

/** What compiling a service needs besides the service and its slices. */
export interface ServiceContext {
  node: NodeInfo;
  /** The valid ProxyPolicy governing the service, if any. */
  policy?: PolicyObject;
  /** Pick chain sizes that exist anyway (weighted slots use them exactly). */
  precreatedSlots?: number;
}

/** The maps and sets each kind of dispatch writes. */
const DISPATCH_SETS: Record<
  DispatchKind,
  { dispatch: string; noEndpoints: string; backends: string; masquerade: string }
> = {
  service: {
    dispatch: Maps.serviceIPs,
    noEndpoints: Maps.noEndpointServices,
    backends: Maps.backends,
    masquerade: Sets.masqueradeServices,
  },
  nodeport: {
    dispatch: Maps.serviceNodeports,
    noEndpoints: Maps.noEndpointNodeports,
    backends: Maps.nodeportBackends,
    masquerade: Sets.masqueradeNodeports,
  },
};

/** `namespace/name`, the key of a service (and of the slices that name it). */
export function serviceKey(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}

/**
 * Orders service keys by namespace, then name, in plain code-unit order (localeCompare
 * costs seconds at 50k services). The first service in this order wins a contested address.
 */
export function compareServiceKeys(a: string, b: string): number {
  const i = a.indexOf('/');
  const j = b.indexOf('/');
  const na = a.slice(0, i);
  const nb = b.slice(0, j);
  if (na !== nb) return na < nb ? -1 : 1;
  const ra = a.slice(i + 1);
  const rb = b.slice(j + 1);
  return ra < rb ? -1 : ra > rb ? 1 : 0;
}

/** Whether the proxy should program this service at all. */
export function proxied(svc: Service): boolean {
  return (
    svc.type !== ServiceType.ExternalName &&
    !svc.headless &&
    svc.clusterIPs.length > 0 &&
    svc.metadata.labels[Labels.serviceProxyName] === undefined &&
    svc.metadata.labels[Labels.headless] === undefined
  );
}

/** The maps and sets source-range checks write, per kind of dispatch. */
const FIREWALL_SETS: Record<DispatchKind, { guard: string; allow: string; deny: string }> = {
  service: { guard: Sets.firewallServices, allow: Sets.firewallAllow, deny: Sets.firewallDeny },
  nodeport: {
    guard: Sets.firewallNodeports,
    allow: Sets.firewallNodeportAllow,
    deny: Sets.firewallNodeportDeny,
  },
};

/** Canonical CIDR strings of one IP version, parsed. */
function cidrsOf(list: string[], version: 4 | 6): CIDR[] {
  return normalizeCIDRs(list.map((c) => parseCIDR(c)!).filter((c) => c && c.version === version));
}

/** Compiles one service with the EndpointSlices that name it. */
export function compileService(
  svc: Service,
  slices: readonly EndpointSlice[],
  ctx: ServiceContext = { node: { name: '' } },
): ServiceContribution {
  const ref = objectRef('Service', svc.metadata);
  const out: ServiceContribution = { units: [], diagnostics: [] };
  const warn = (field: string, message: string) =>
    out.diagnostics.push({ severity: 'warning', object: ref, field, message });
  const behaviour = serviceBehaviour(svc, ctx.policy);
  const exactUpTo = ctx.precreatedSlots ?? PRECREATED_PICK_SLOTS;
  const hasNodePorts = svc.type === ServiceType.NodePort || svc.type === ServiceType.LoadBalancer;
  const externalLocal =
    svc.externalTrafficPolicy === TrafficPolicy.Local && svc.type !== ServiceType.ClusterIP;
  const internalLocal = svc.internalTrafficPolicy === TrafficPolicy.Local;

  for (const family of FAMILIES) {
    const fi = FAMILY_INFO[family];
    const clusterIP = svc.clusterIPs.find((ip) => versionOf(ip) === fi.version);
    if (!clusterIP) continue;
    const familySlices = slices.filter((s) => (s.addressType === 'IPv4' ? 4 : 6) === fi.version);
    // Source ranges of this family: the service's own (load balancer IPs only) and the policy's.
    const lbRanges = cidrsOf(svc.loadBalancerSourceRanges, fi.version);
    const policyAllow = behaviour.allow ? cidrsOf(behaviour.allow, fi.version) : undefined;
    const deny = cidrsOf(behaviour.deny, fi.version);
    // A list given only for the other family still restricts this one: nothing is allowed.
    const policyAllowAll = behaviour.allow === undefined;
    const lbAllowAll = svc.loadBalancerSourceRanges.length === 0;

    for (const sp of svc.ports) {
      const proto = PROTO[sp.protocol];
      const cat = categorizeEndpoints(sp, familySlices, ctx.node);
      // A pod reaching itself through the service is masqueraded (endpoint . endpoint pairs).
      const hairpin: SharedKeys = {
        set: Sets.hairpin,
        keys: [...new Set([...cat.cluster, ...cat.local].map((b) => b.ip))],
      };
      const clusterIPs: SharedKeys = { set: Sets.clusterIPs, keys: [clusterIP] };
      const service = `${svc.metadata.namespace}/${svc.metadata.name}`;

      /** A unit dispatching on `key` (`VIP . proto . port`, or `proto . NodePort`). */
      const unit = (
        dkind: DispatchKind,
        ekind: DispatchEntry['kind'],
        key: string,
        label: string,
        address: string | undefined,
      ): DispatchUnit => {
        const external = ekind !== 'clusterIP';
        const sets = DISPATCH_SETS[dkind];
        const owned: SetLines[] = [];
        const own = (set: string, lines: string[]) => {
          if (lines.length) owned.push({ set, lines: lines.join('\n'), count: lines.length });
        };
        const picks: PickSpec[] = [];
        // Internal traffic (ClusterIP) with policy Local uses this node's endpoints only.
        const backends = !external && internalLocal ? cat.local : cat.cluster;
        const table = slotTable(backends, behaviour, exactUpTo);
        const entry: DispatchEntry = {
          family,
          kind: ekind,
          ...(address ? { address } : {}),
          protocol: proto,
          port: ekind === 'nodePort' ? sp.nodePort! : sp.port,
          service,
          portName: sp.name,
          backends,
          verdict: 'forward',
          scheduler: behaviour.scheduler,
          slots: table.slots.length,
          topology: cat.topology,
          ...(behaviour.policy ? { policy: behaviour.policy } : {}),
        };
        const pickLines = (t: SlotTable, pool: Pool): string[] => {
          const base = pool === 'local' ? LOCAL_SLOT_BASE : 0;
          return t.slots.map((b, slot) => `${key} . ${base + slot} : ${b.ip} . ${b.port}`);
        };
        if (table.slots.length) {
          const pick: PickSpec = {
            kind: dkind,
            scheduler: table.scheduler,
            slots: table.slots.length,
            pool: 'cluster',
          };
          picks.push(pick);
          own(sets.dispatch, [`${key} : goto ${pickChainName(pick)}`]);
          own(sets.backends, pickLines(table, 'cluster'));
        } else {
          // Kubernetes drops, not rejects, when endpoints exist but none is usable from here
          // (internalTrafficPolicy Local without local endpoints); no endpoints at all: reject.
          entry.verdict = !external && internalLocal && cat.cluster.length ? 'drop' : 'reject';
          own(sets.noEndpoints, [`${key} : ${entry.verdict === 'drop' ? 'drop' : `goto ${Chains.reject}`}`]);
        }
        if (external && externalLocal && table.slots.length) {
          // Clients outside the cluster reach this node's endpoints only, with their own
          // source address; none here: drop (the load balancer's health check steers away).
          const local = slotTable(cat.local, behaviour, exactUpTo);
          entry.localBackends = cat.local;
          const localSet = dkind === 'service' ? Maps.localServiceIPs : Maps.localServiceNodeports;
          if (local.slots.length) {
            const pick: PickSpec = {
              kind: dkind,
              scheduler: local.scheduler,
              slots: local.slots.length,
              pool: 'local',
            };
            picks.push(pick);
            own(localSet, [`${key} : goto ${pickChainName(pick)}`]);
            own(sets.backends, pickLines(local, 'local'));
          } else {
            own(localSet, [`${key} : drop`]);
          }
        }
        // Masquerade: `auto` is Kubernetes' rule (external traffic unless policy Local;
        // ClusterIP traffic from outside the cluster CIDRs is marked by a static rule).
        const masq =
          behaviour.masquerade === 'always' ||
          (behaviour.masquerade === 'auto' && external && !externalLocal);
        if (masq) own(sets.masquerade, [key]);
        if (behaviour.masquerade === 'never' && dkind === 'service') own(Sets.noMasqueradeServices, [key]);
        let affinityTimeout: number | undefined;
        if (behaviour.affinityTimeout !== undefined && table.slots.length) {
          affinityTimeout = behaviour.affinityTimeout;
          entry.affinityTimeout = affinityTimeout;
          const [guard, timeouts] =
            dkind === 'service'
              ? [Sets.affinityServices, Maps.affinityTimeouts]
              : [Sets.affinityNodeports, Maps.affinityNodeportTimeouts];
          own(guard, [key]);
          own(timeouts, [`${key} : goto ${affinityChainName(affinityTimeout)}`]);
        }
        if (external) {
          // Source ranges, before DNAT: the service's own for load balancer IPs, and the
          // policy's for every external address. Both lists must let a source through.
          const restrict = ekind === 'loadBalancerIP' && !lbAllowAll;
          let allow: CIDR[] | undefined;
          if (restrict && !policyAllowAll) allow = intersectCIDRs(lbRanges, policyAllow!);
          else if (restrict) allow = lbRanges;
          else if (!policyAllowAll) allow = policyAllow;
          const fw = FIREWALL_SETS[dkind];
          if (allow) {
            own(fw.guard, [key]);
            own(
              fw.allow,
              allow.map((c) => `${key} . ${cidrText(c)}`),
            );
          }
          own(
            fw.deny,
            deny.map((c) => `${key} . ${cidrText(c)}`),
          );
        }
        return {
          family,
          claim: `${family} ${dkind} ${key}`,
          label,
          owned,
          shared: ekind === 'clusterIP' ? [hairpin, clusterIPs] : [hairpin],
          entry,
          picks,
          ...(affinityTimeout !== undefined ? { affinityTimeout } : {}),
        };
      };
      const vipUnit = (vip: string, ekind: DispatchEntry['kind']) =>
        unit(
          'service',
          ekind,
          `${vip} . ${proto} . ${sp.port}`,
          `${formatHostPort(vip, sp.port)}/${sp.protocol}`,
          vip,
        );
      out.units.push(vipUnit(clusterIP, 'clusterIP'));
      for (const vip of ipsOf(svc.externalIPs, fi.version)) out.units.push(vipUnit(vip, 'externalIP'));
      for (const vip of ipsOf(svc.loadBalancerIPs, fi.version))
        out.units.push(vipUnit(vip, 'loadBalancerIP'));
      if (hasNodePorts && sp.nodePort) {
        out.units.push(
          unit(
            'nodeport',
            'nodePort',
            `${proto} . ${sp.nodePort}`,
            `NodePort ${sp.nodePort}/${sp.protocol}`,
            undefined,
          ),
        );
      }
    }
  }
  // A service claims each address and port once: an external IP that is also its LB
  // ingress IP (or its ClusterIP), or two ports with one NodePort, count once.
  const claimed = new Set<string>();
  out.units = out.units.filter((u) => {
    if (!claimed.has(u.claim)) {
      claimed.add(u.claim);
      return true;
    }
    if (u.entry.kind === 'nodePort')
      warn('spec.ports', `${u.label} is used by two ports; programmed for the first`);
    return false;
  });
  const families = new Set(svc.clusterIPs.map(versionOf));
  svc.externalIPs.forEach((ip, i) => {
    if (!families.has(versionOf(ip)))
      warn(`spec.externalIPs[${i}]`, `${ip} is ignored: the service has no IPv${versionOf(ip)} cluster IP`);
  });
  svc.loadBalancerIPs.forEach((ip) => {
    if (!families.has(versionOf(ip)))
      warn(
        'status.loadBalancer.ingress',
        `${ip} is ignored: the service has no IPv${versionOf(ip)} cluster IP`,
      );
  });
  if (svc.loadBalancerSourceRanges.length && svc.type !== ServiceType.LoadBalancer)
    warn('spec.loadBalancerSourceRanges', `has no effect on a ${svc.type} service`);
  return out;
}
