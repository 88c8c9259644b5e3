/**
 * What one service puts into the ruleset: for each of its addresses (ClusterIP, external
 * IPs, load balancer IPs, NodePorts) and ports, a dispatch unit with its map and set
 * elements. Pure.
 */
import { concat, goto, type Elem, type Expr, type Family } from '../nft/ir.js';
import { elemKey } from '../nft/ruleset.js';
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
import { ipsOf } from './config.js';
import { type Backend, usableBackends } from './endpoints.js';
import { FAMILY_INFO, PROTO } from './family.js';
import {
  Chains,
  type DispatchKind,
  FAMILIES,
  Maps,
  pickChainName,
  type SchedulerName,
  Sets,
} from './names.js';

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
  /** Usable backends; empty means the entry rejects. */
  backends: Backend[];
}

/** Elements of one named set or map of the unit's family table. */
export interface SetElems {
  set: string;
  elems: Elem[];
}

/**
 * Everything one address (or NodePort) of one service port puts in a table. Units are the
 * grain of conflict handling: two services cannot own the same VIP:port or NodePort.
 */
export interface DispatchUnit {
  family: Family;
  /** Conflict key: `ip vip 10.0.0.1 . tcp . #80` or `ip nodeport tcp . #30080`. */
  claim: string;
  /** For messages: `10.0.0.1:80/TCP`, `NodePort 30080/TCP`. */
  label: string;
  /** Elements only this unit writes: their keys derive from the claim. */
  owned: SetElems[];
  /** Elements other units may write too (hairpin pairs, cluster IPs): reference-counted. */
  shared: SetElems[];
  entry: DispatchEntry;
  /** The pick chain the unit's dispatch entry jumps to (none when rejecting). */
  pick?: { kind: DispatchKind; slots: number };
}

/** What one service contributes to the ruleset. */
export interface ServiceContribution {
  units: DispatchUnit[];
  /** Problems and unsupported fields of this service (not conflicts with others). */
  diagnostics: Diagnostic[];
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

/** The scheduler every service uses until ProxyPolicy chooses others. */
export const SCHEDULER: SchedulerName = 'random';

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

/** Compiles one service with the EndpointSlices that name it. */
export function compileService(svc: Service, slices: readonly EndpointSlice[]): ServiceContribution {
  const ref = objectRef('Service', svc.metadata);
  const out: ServiceContribution = { units: [], diagnostics: [] };
  const warn = (field: string, message: string) =>
    out.diagnostics.push({ severity: 'warning', object: ref, field, message });
  if (svc.externalTrafficPolicy === TrafficPolicy.Local && svc.type !== ServiceType.ClusterIP) {
    warn(
      'spec.externalTrafficPolicy',
      'Local is not supported yet; external traffic is handled as with Cluster (masqueraded, all endpoints)',
    );
  }
  if (svc.internalTrafficPolicy === TrafficPolicy.Local) {
    warn('spec.internalTrafficPolicy', 'Local is not supported yet; handled as Cluster (all endpoints)');
  }
  if (svc.sessionAffinity === 'ClientIP') {
    warn(
      'spec.sessionAffinity',
      'ClientIP is not supported yet; each connection picks an endpoint at random',
    );
  }
  // Fail closed: without source-range filtering, programming the load balancer IPs would
  // open them to every source through this node.
  const lbIPs = svc.loadBalancerSourceRanges.length ? [] : svc.loadBalancerIPs;
  if (svc.loadBalancerSourceRanges.length && svc.loadBalancerIPs.length) {
    out.diagnostics.push({
      severity: 'error',
      object: ref,
      field: 'spec.loadBalancerSourceRanges',
      message:
        'is not supported yet; the load balancer IPs are not programmed on this node rather than open to every source',
    });
  }
  const hasNodePorts = svc.type === ServiceType.NodePort || svc.type === ServiceType.LoadBalancer;

  for (const family of FAMILIES) {
    const fi = FAMILY_INFO[family];
    const clusterIP = svc.clusterIPs.find((ip) => versionOf(ip) === fi.version);
    if (!clusterIP) continue;
    const familySlices = slices.filter((s) => (s.addressType === 'IPv4' ? 4 : 6) === fi.version);

    for (const sp of svc.ports) {
      const proto = PROTO[sp.protocol];
      const backends = usableBackends(sp, familySlices);
      const n = backends.length;
      // A pod reaching itself through the service is masqueraded (endpoint . endpoint pairs).
      const hairpin: SetElems = { set: Sets.hairpin, elems: backends.map((b) => concat(b.ip, b.ip)) };
      const entry = (kind: DispatchEntry['kind'], address?: string): DispatchEntry => ({
        family,
        kind,
        ...(address ? { address } : {}),
        protocol: proto,
        port: kind === 'nodePort' ? sp.nodePort! : sp.port,
        service: `${svc.metadata.namespace}/${svc.metadata.name}`,
        portName: sp.name,
        backends,
      });
      /** A unit dispatching on `keyParts` (VIP . proto . port, or proto . NodePort). */
      const unit = (
        kind: DispatchKind,
        keyParts: Expr[],
        label: string,
        e: DispatchEntry,
        masquerade: boolean,
      ): DispatchUnit => {
        const sets = DISPATCH_SETS[kind];
        const key = concat(...keyParts);
        const owned: SetElems[] =
          n === 0
            ? [{ set: sets.noEndpoints, elems: [[key, goto(Chains.reject)]] }]
            : [
                { set: sets.dispatch, elems: [[key, goto(pickChainName(kind, SCHEDULER, n))]] },
                {
                  set: sets.backends,
                  elems: backends.map((b, slot): Elem => [concat(...keyParts, slot), concat(b.ip, b.port)]),
                },
                ...(masquerade ? [{ set: sets.masquerade, elems: [key] }] : []),
              ];
        return {
          family,
          claim: `${family} ${kind} ${elemKey(key)}`,
          label,
          owned,
          shared: [hairpin],
          entry: e,
          ...(n ? { pick: { kind, slots: n } } : {}),
        };
      };
      const vipUnit = (vip: string, kind: DispatchEntry['kind']) =>
        unit(
          'service',
          [vip, proto, sp.port],
          `${formatHostPort(vip, sp.port)}/${sp.protocol}`,
          entry(kind, vip),
          kind !== 'clusterIP',
        );
      const cip = vipUnit(clusterIP, 'clusterIP');
      cip.shared = [hairpin, { set: Sets.clusterIPs, elems: [clusterIP] }];
      out.units.push(cip);
      for (const vip of ipsOf(svc.externalIPs, fi.version)) out.units.push(vipUnit(vip, 'externalIP'));
      for (const vip of ipsOf(lbIPs, fi.version)) out.units.push(vipUnit(vip, 'loadBalancerIP'));
      if (hasNodePorts && sp.nodePort) {
        // NodePort traffic is external: masqueraded (externalTrafficPolicy Cluster).
        out.units.push(
          unit(
            'nodeport',
            [proto, sp.nodePort],
            `NodePort ${sp.nodePort}/${sp.protocol}`,
            entry('nodePort'),
            true,
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
  lbIPs.forEach((ip) => {
    if (!families.has(versionOf(ip)))
      warn(
        'status.loadBalancer.ingress',
        `${ip} is ignored: the service has no IPv${versionOf(ip)} cluster IP`,
      );
  });
  return out;
}
