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
import {
  type CIDR,
  cidrContains,
  formatCIDR,
  intersectCIDRs,
  normalizeCIDRs,
  parseCIDR,
  parseIP,
} from '../net/ip.js';
import type { PolicyObject, Scheduler } from '../api/types.js';
import { ipsOf } from './config.js';
import { categorizeEndpoints, type EndpointCategories, type NodeInfo } from './endpoints.js';
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
  address?: string | undefined;
  protocol: 'tcp' | 'udp' | 'sctp';
  port: number;
  /** `namespace/name` of the service. */
  service: string;
  portName: string;
  /**
   * How many endpoints this address forwards to (for externalTrafficPolicy Local: those that
   * pods and the node itself reach). 0: see `verdict`. Which ones is in the unit's lines.
   */
  endpoints: number;
  /**
   * externalTrafficPolicy Local, external addresses: how many endpoints clients outside the
   * cluster reach (this node's).
   */
  localEndpoints?: number | undefined;
  /** `forward`, or what new connections get when there is no endpoint to forward to. */
  verdict: 'forward' | 'reject' | 'drop';
  /** ProxyPolicy scheduler in force. */
  scheduler: Scheduler;
  /** Slots of the pick (weights and Maglev tables make more slots than endpoints). */
  slots: number;
  /** Seconds of ClientIP affinity, when on. */
  affinityTimeout?: number | undefined;
  /** `namespace/name` of the ProxyPolicy in force. */
  policy?: string | undefined;
  /** Topology hints in use for `backends`. */
  topology: EndpointCategories['topology'];
}

/** The line of a shared element from its key. */
export function sharedLine(set: string, key: string): string {
  return set === Sets.hairpin ? `${key} . ${key}` : key;
}

/**
 * Everything one address (or NodePort) of one service port puts in a table: its dispatch
 * entry and what its element lines are made of. Units are the grain of conflict handling:
 * two services cannot own the same VIP:port or NodePort. Kept compact, one object each, since
 * the operator holds one per address and port of the cluster: the lines are generated from
 * these fields when needed (`unitLines`), never stored.
 */
// Every field of a unit is present, set or undefined: one object shape for every unit.
export interface DispatchUnit extends DispatchEntry {
  /**
   * Conflict key within the family's table, also the key every line starts with:
   * `10.0.0.1 . tcp . 80`, `tcp . 30080`.
   */
  claim: string;
  /** The pick chain of the dispatch entry, and the local pool's (externalTrafficPolicy Local). */
  pick?: PickSpec | undefined;
  localPick?: PickSpec | undefined;
  /** The backend in each slot of the pick, `ip . port` joined by `\n` ('' without slots). */
  slotLines: string;
  /** The same for the local pool, when `localEndpoints` is set. */
  localSlotLines?: string | undefined;
  /**
   * Its traffic is masqueraded (`masquerade-*` set), only the node's own
   * (`masquerade-*from-node`: externalTrafficPolicy Local), or exempt (`no-masquerade-services`).
   */
  masquerade?: 'always' | 'fromNode' | 'never' | undefined;
  /** Source ranges (canonical CIDR text): allowed, when restricted; refused. */
  allow?: readonly string[] | undefined;
  deny?: readonly string[] | undefined;
  /**
   * Elements other units may write too, reference-counted by key: the endpoint addresses of
   * the hairpin pairs (one array for all units of a service port), and the ClusterIP of a
   * ClusterIP unit (`cluster-ips`).
   */
  hairpin: readonly string[];
  clusterIP?: string | undefined;
}

/** Receives a unit's element lines: the set and one line. */
export type LineSink = (set: string, line: string) => void;

/**
 * The element lines a unit owns, set by set, each set's lines together, generated from its
 * fields (deterministic: the same unit always gives the same lines in the same order).
 */
export function unitLines(u: DispatchUnit, emit: LineSink): void {
  const dkind: DispatchKind = u.kind === 'nodePort' ? 'nodeport' : 'service';
  const sets = DISPATCH_SETS[dkind];
  const key = u.claim;
  const slotsOf = (block: string, base: number) => {
    let slot = base;
    let start = 0;
    while (start < block.length) {
      let nl = block.indexOf('\n', start);
      if (nl < 0) nl = block.length;
      emit(sets.backends, `${key} . ${slot++} : ${block.slice(start, nl)}`);
      start = nl + 1;
    }
  };
  if (u.pick) {
    emit(sets.dispatch, `${key} : goto ${pickChainName(u.pick)}`);
    slotsOf(u.slotLines, 0);
  } else {
    emit(sets.noEndpoints, `${key} : ${u.verdict === 'drop' ? 'drop' : `goto ${Chains.reject}`}`);
  }
  if (u.localSlotLines !== undefined) {
    const localSet = dkind === 'service' ? Maps.localServiceIPs : Maps.localServiceNodeports;
    if (u.localPick) {
      emit(localSet, `${key} : goto ${pickChainName(u.localPick)}`);
      slotsOf(u.localSlotLines, LOCAL_SLOT_BASE);
    } else {
      emit(localSet, `${key} : drop`);
    }
  }
  if (u.masquerade === 'always') emit(sets.masquerade, key);
  if (u.masquerade === 'fromNode') emit(sets.masqueradeFromNode, key);
  if (u.masquerade === 'never') emit(Sets.noMasqueradeServices, key);
  if (u.affinityTimeout !== undefined) {
    const [guard, timeouts] =
      dkind === 'service'
        ? [Sets.affinityServices, Maps.affinityTimeouts]
        : [Sets.affinityNodeports, Maps.affinityNodeportTimeouts];
    emit(guard, key);
    emit(timeouts, `${key} : goto ${affinityChainName(u.affinityTimeout)}`);
  }
  const fw = FIREWALL_SETS[dkind];
  if (u.allow) {
    emit(fw.guard, key);
    for (const c of u.allow) emit(fw.allow, `${key} . ${c}`);
  }
  for (const c of u.deny ?? []) emit(fw.deny, `${key} . ${c}`);
}

/** The lines of a unit as blocks by set (lines joined by `\n`), in generation order. */
export function unitBlocks(u: DispatchUnit): [set: string, block: string][] {
  const out: [string, string][] = [];
  let set: string | undefined;
  let lines: string[] = [];
  unitLines(u, (s, line) => {
    if (s !== set) {
      if (set !== undefined) out.push([set, lines.join('\n')]);
      set = s;
      lines = [];
    }
    lines.push(line);
  });
  if (set !== undefined) out.push([set, lines.join('\n')]);
  return out;
}

/** How many lines a unit puts in each set, without making them. */
export function unitLineCounts(u: DispatchUnit, add: (set: string, n: number) => void): void {
  const dkind: DispatchKind = u.kind === 'nodePort' ? 'nodeport' : 'service';
  const sets = DISPATCH_SETS[dkind];
  if (u.pick) {
    add(sets.dispatch, 1);
    add(sets.backends, lineCount(u.slotLines));
  } else {
    add(sets.noEndpoints, 1);
  }
  if (u.localSlotLines !== undefined) {
    add(dkind === 'service' ? Maps.localServiceIPs : Maps.localServiceNodeports, 1);
    if (u.localPick) add(sets.backends, lineCount(u.localSlotLines));
  }
  if (u.masquerade === 'always') add(sets.masquerade, 1);
  if (u.masquerade === 'fromNode') add(sets.masqueradeFromNode, 1);
  if (u.masquerade === 'never') add(Sets.noMasqueradeServices, 1);
  if (u.affinityTimeout !== undefined) {
    add(dkind === 'service' ? Sets.affinityServices : Sets.affinityNodeports, 1);
    add(dkind === 'service' ? Maps.affinityTimeouts : Maps.affinityNodeportTimeouts, 1);
  }
  const fw = FIREWALL_SETS[dkind];
  if (u.allow) {
    add(fw.guard, 1);
    add(fw.allow, u.allow.length);
  }
  if (u.deny?.length) add(fw.deny, u.deny.length);
}

/** For messages: `10.0.0.1:80/TCP`, `NodePort 30080/TCP`. */
export function unitLabel(u: DispatchUnit): string {
  const proto = u.protocol.toUpperCase();
  return u.address === undefined
    ? `NodePort ${u.port}/${proto}`
    : `${formatHostPort(u.address, u.port)}/${proto}`;
}

/** How many lines a block holds. */
export function lineCount(block: string): number {
  let n = block ? 1 : 0;
  for (let i = block.indexOf('\n'); i >= 0; i = block.indexOf('\n', i + 1)) n++;
  return n;
}

/**
 * The endpoints (`ip|port`) a unit forwards to, in either pool: what stale flows and
 * affinity entries are checked against. Computed when asked, for the few units that need it.
 */
export function unitEndpoints(u: DispatchUnit): Set<string> {
  const out = new Set<string>();
  for (const block of [u.slotLines, u.localSlotLines ?? '']) {
    if (!block) continue;
    for (const line of block.split('\n')) out.add(line.replace(' . ', '|'));
  }
  return out;
}

/**
 * The string as one flat sequence of bytes: V8 keeps the result of a template literal (or a
 * join of one part) as a rope of its parts, 120 bytes for a 20-character key where the flat
 * string takes 40. For ASCII text held for the life of a unit.
 */
export function flat(s: string): string {
  return Buffer.from(s, 'latin1').toString('latin1');
}

/** One shared PickSpec per distinct pick: every unit with the same pick holds the same object. */
const PICKS = new Map<string, PickSpec>();
function pickSpec(p: PickSpec): PickSpec {
  const name = pickChainName(p);
  let known = PICKS.get(name);
  if (!known) PICKS.set(name, (known = Object.freeze({ ...p })));
  return known;
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
  /** The ClusterIP ranges: external and load balancer IPs inside them are refused. */
  serviceCIDRs?: readonly CIDR[];
  /** This node's IPs: source ranges that admit one admit the load balancer IPs too. */
  nodeIPs?: readonly string[];
}

/** The maps and sets each kind of dispatch writes. */
const DISPATCH_SETS: Record<
  DispatchKind,
  { dispatch: string; noEndpoints: string; backends: string; masquerade: string; masqueradeFromNode: string }
> = {
  service: {
    dispatch: Maps.serviceIPs,
    noEndpoints: Maps.noEndpointServices,
    backends: Maps.backends,
    masquerade: Sets.masqueradeServices,
    masqueradeFromNode: Sets.masqueradeFromNode,
  },
  nodeport: {
    dispatch: Maps.serviceNodeports,
    noEndpoints: Maps.noEndpointNodeports,
    backends: Maps.nodeportBackends,
    masquerade: Sets.masqueradeNodeports,
    masqueradeFromNode: Sets.masqueradeNodeportsFromNode,
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

/**
 * Whether the proxy should program this service at all. `serviceProxyName`: the name this
 * proxy answers to in the `service.kubernetes.io/service-proxy-name` label; without one it
 * takes the services without that label (as kube-proxy), with one only those labelled so
 * (as Cilium's k8s-service-proxy-name), so services can be split between proxies.
 */
export function proxied(svc: Service, serviceProxyName = ''): boolean {
  return (
    svc.type !== ServiceType.ExternalName &&
    !svc.headless &&
    svc.clusterIPs.length > 0 &&
    (svc.metadata.labels[Labels.serviceProxyName] ?? '') === serviceProxyName &&
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
  const service = flat(`${svc.metadata.namespace}/${svc.metadata.name}`);
  const serviceCIDRs = ctx.serviceCIDRs ?? [];
  /** The service CIDR an external address lies in (there it would pose as a ClusterIP). */
  const serviceCIDROf = (ip: string): CIDR | undefined => {
    if (!serviceCIDRs.length) return undefined;
    const addr = parseIP(ip)!;
    return serviceCIDRs.find((c) => cidrContains(c, addr));
  };

  for (const family of FAMILIES) {
    const fi = FAMILY_INFO[family];
    const clusterIP = svc.clusterIPs.find((ip) => versionOf(ip) === fi.version);
    if (!clusterIP) continue;
    const familySlices = slices.filter((s) => (s.addressType === 'IPv4' ? 4 : 6) === fi.version);
    const externalIPs = ipsOf(svc.externalIPs, fi.version).filter((ip) => !serviceCIDROf(ip));
    const lbIPs = ipsOf(svc.loadBalancerIPs, fi.version).filter((ip) => !serviceCIDROf(ip));
    // Source ranges of this family: the service's own (load balancer IPs only) and the policy's.
    let lbRanges = cidrsOf(svc.loadBalancerSourceRanges, fi.version);
    // A node reaching a load balancer IP that is also local to it (or looped back by the load
    // balancer) comes from the VIP itself: ranges that admit the node admit its VIPs.
    if (
      lbRanges.length &&
      ipsOf([...(ctx.nodeIPs ?? [])], fi.version).some((ip) =>
        lbRanges.some((c) => cidrContains(c, parseIP(ip)!)),
      )
    )
      lbRanges = normalizeCIDRs([
        ...lbRanges,
        ...lbIPs.map((ip) => parseCIDR(`${ip}/${fi.version === 4 ? 32 : 128}`)!),
      ]);
    const policyAllow = behaviour.allow ? cidrsOf(behaviour.allow, fi.version) : undefined;
    const deny = cidrsOf(behaviour.deny, fi.version);
    // A list given only for the other family still restricts this one: nothing is allowed.
    const policyAllowAll = behaviour.allow === undefined;
    const lbAllowAll = svc.loadBalancerSourceRanges.length === 0;

    for (const sp of svc.ports) {
      const proto = PROTO[sp.protocol];
      const cat = categorizeEndpoints(sp, familySlices, ctx.node);
      // A pod reaching itself through the service is masqueraded (endpoint . endpoint pairs).
      const hairpin = [...new Set([...cat.cluster, ...cat.local].map((b) => b.ip))];

      /** A unit dispatching on `key` (`VIP . proto . port`, or `proto . NodePort`). */
      const unit = (
        dkind: DispatchKind,
        ekind: DispatchEntry['kind'],
        key: string,
        address: string | undefined,
      ): DispatchUnit => {
        const external = ekind !== 'clusterIP';
        // Internal traffic (ClusterIP) with policy Local uses this node's endpoints only.
        const backends = !external && internalLocal ? cat.local : cat.cluster;
        const table = slotTable(backends, behaviour, exactUpTo);
        const slotText = (t: SlotTable) => flat(t.slots.map((b) => `${b.ip} . ${b.port}`).join('\n'));
        // Every field present, in one order: one object shape for every unit of the cluster.
        const u: DispatchUnit = {
          family,
          kind: ekind,
          address,
          protocol: proto,
          port: ekind === 'nodePort' ? sp.nodePort! : sp.port,
          service,
          portName: sp.name,
          endpoints: backends.length,
          localEndpoints: undefined,
          verdict: 'forward',
          scheduler: behaviour.scheduler,
          slots: table.slots.length,
          affinityTimeout: undefined,
          policy: behaviour.policy,
          topology: cat.topology,
          claim: key,
          pick: undefined,
          localPick: undefined,
          slotLines: slotText(table),
          localSlotLines: undefined,
          masquerade: undefined,
          allow: undefined,
          deny: undefined,
          hairpin,
          clusterIP: ekind === 'clusterIP' ? clusterIP : undefined,
        };
        if (table.slots.length) {
          u.pick = pickSpec({
            kind: dkind,
            scheduler: table.scheduler,
            slots: table.slots.length,
            pool: 'cluster',
          });
        } else {
          // Kubernetes drops, not rejects, when endpoints exist but none is usable from here
          // (internalTrafficPolicy Local without local endpoints); no endpoints at all: reject.
          u.verdict = !external && internalLocal && cat.cluster.length ? 'drop' : 'reject';
        }
        if (external && externalLocal && table.slots.length) {
          // Clients outside the cluster reach this node's endpoints only, with their own
          // source address; none here: drop (the load balancer's health check steers away).
          const local = slotTable(cat.local, behaviour, exactUpTo);
          u.localEndpoints = cat.local.length;
          u.localSlotLines = slotText(local);
          if (local.slots.length)
            u.localPick = pickSpec({
              kind: dkind,
              scheduler: local.scheduler,
              slots: local.slots.length,
              pool: 'local',
            });
        }
        // Masquerade: `auto` is Kubernetes' rule (external traffic unless policy Local;
        // ClusterIP traffic from outside the cluster CIDRs is marked by a static rule).
        if (
          behaviour.masquerade === 'always' ||
          (behaviour.masquerade === 'auto' && external && !externalLocal)
        )
          u.masquerade = 'always';
        else if (behaviour.masquerade === 'auto' && external && table.slots.length)
          // externalTrafficPolicy Local: the node's own connections still are (kube-proxy's
          // `fib saddr type local` rule); outside clients and pods keep their address.
          u.masquerade = 'fromNode';
        else if (behaviour.masquerade === 'never' && dkind === 'service') u.masquerade = 'never';
        if (behaviour.affinityTimeout !== undefined && table.slots.length)
          u.affinityTimeout = behaviour.affinityTimeout;
        if (external) {
          // Source ranges, before DNAT: the service's own for load balancer IPs, and the
          // policy's for every external address. Both lists must let a source through.
          const restrict = ekind === 'loadBalancerIP' && !lbAllowAll;
          let allow: CIDR[] | undefined;
          if (restrict && !policyAllowAll) allow = intersectCIDRs(lbRanges, policyAllow!);
          else if (restrict) allow = lbRanges;
          else if (!policyAllowAll) allow = policyAllow;
          if (allow) u.allow = allow.map(cidrText);
          if (deny.length) u.deny = deny.map(cidrText);
        }
        return u;
      };
      const vipUnit = (vip: string, ekind: DispatchEntry['kind']) =>
        unit('service', ekind, flat(`${vip} . ${proto} . ${sp.port}`), vip);
      out.units.push(vipUnit(clusterIP, 'clusterIP'));
      for (const vip of externalIPs) out.units.push(vipUnit(vip, 'externalIP'));
      for (const vip of lbIPs) out.units.push(vipUnit(vip, 'loadBalancerIP'));
      if (hasNodePorts && sp.nodePort) {
        out.units.push(unit('nodeport', 'nodePort', flat(`${proto} . ${sp.nodePort}`), undefined));
      }
    }
  }
  // A service claims each address and port once: an external IP that is also its LB
  // ingress IP (or its ClusterIP), or two ports with one NodePort, count once.
  const claimed = new Set<string>();
  out.units = out.units.filter((u) => {
    const k = `${u.family} ${u.claim}`;
    if (!claimed.has(k)) {
      claimed.add(k);
      return true;
    }
    if (u.kind === 'nodePort')
      warn('spec.ports', `${unitLabel(u)} is used by two ports; programmed for the first`);
    return false;
  });
  const families = new Set(svc.clusterIPs.map(versionOf));
  const refused = (ip: string) => {
    if (!families.has(versionOf(ip))) return `the service has no IPv${versionOf(ip)} cluster IP`;
    const range = serviceCIDROf(ip);
    return range
      ? `it is inside the service CIDR ${formatCIDR(range)}, where only ClusterIPs belong`
      : undefined;
  };
  svc.externalIPs.forEach((ip, i) => {
    const why = refused(ip);
    if (why) warn(`spec.externalIPs[${i}]`, `${ip} is ignored: ${why}`);
  });
  svc.loadBalancerIPs.forEach((ip) => {
    const why = refused(ip);
    if (why) warn('status.loadBalancer.ingress', `${ip} is ignored: ${why}`);
  });
  if (svc.loadBalancerSourceRanges.length && svc.type !== ServiceType.LoadBalancer)
    warn('spec.loadBalancerSourceRanges', `has no effect on a ${svc.type} service`);
  return out;
}
