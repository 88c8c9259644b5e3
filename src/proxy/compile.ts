/**
 * The compiler: cluster state + node settings -> the desired nftables ruleset.
 *
 * Pure: no I/O, same input gives the same output. The shape is flat (docs/architecture.md):
 * a fixed set of chains, and per service only map and set elements. Dispatch is one verdict
 * map lookup on `daddr . l4proto . dport` that jumps to a pick chain shared by every service
 * port with the same number of endpoints; the pick chain looks the endpoint up in one shared
 * backends map keyed by `VIP . proto . port . random slot`.
 */
import {
  concat,
  ct,
  fibDaddrType,
  goto,
  jump,
  match,
  meta,
  numgenRandom,
  payload,
  prefix,
  ret,
  setRef,
  vmap,
  type Elem,
  type Expr,
  type Family,
  type Stmt,
} from '../nft/ir.js';
import {
  elemKey,
  emptyRuleset,
  emptyTable,
  type Ruleset,
  type TableState,
  tableKey,
} from '../nft/ruleset.js';
import {
  type CIDR,
  formatHostPort,
  formatIP,
  normalizeCIDRs,
  parseCIDR,
  parseIP,
  versionOf,
} from '../net/ip.js';
import {
  type ClusterState,
  type Diagnostic,
  type EndpointSlice,
  Labels,
  objectRef,
  type Service,
  ServiceType,
  TrafficPolicy,
} from '../k8s/types.js';
import { ipsOf, type ProxyConfig } from './config.js';
import { type Backend, usableBackends } from './endpoints.js';
import {
  BaseChains,
  Chains,
  type DispatchKind,
  FAMILIES,
  Maps,
  MASQUERADE_MARK,
  pickChainName,
  PRECREATED_PICK_SLOTS,
  Priority,
  type SchedulerName,
  Sets,
  TABLE,
} from './names.js';

/** Figures about one compilation, for logs and metrics. */
export interface CompileStats {
  /** Services programmed (at least one port reachable or rejecting). */
  services: number;
  /** Dispatch entries that forward to endpoints: one per address (ClusterIP, external IP, LB IP, NodePort) and port. */
  dispatchEntries: number;
  /** Backend slots programmed. */
  endpoints: number;
  /** Services skipped on purpose: headless, ExternalName, another proxy's. */
  skipped: number;
}

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

/** The desired ruleset and what was found on the way. */
export interface CompileResult {
  ruleset: Ruleset;
  diagnostics: Diagnostic[];
  stats: CompileStats;
  /** Every programmed dispatch entry, in ruleset order. */
  entries: DispatchEntry[];
}

/** Per-family vocabulary. */
interface FamilyInfo {
  family: Family;
  version: 4 | 6;
  /** `ip` or `ip6`: the payload protocol of addresses. */
  l3: 'ip' | 'ip6';
  addrType: 'ipv4_addr' | 'ipv6_addr';
  loopback: Expr;
  reject: Stmt;
}

const FAMILY_INFO: Record<Family, FamilyInfo> = {
  ip: {
    family: 'ip',
    version: 4,
    l3: 'ip',
    addrType: 'ipv4_addr',
    loopback: prefix('127.0.0.0', 8),
    reject: { reject: { type: 'icmp', expr: 'port-unreachable' } },
  },
  ip6: {
    family: 'ip6',
    version: 6,
    l3: 'ip6',
    addrType: 'ipv6_addr',
    loopback: '::1',
    reject: { reject: { type: 'icmpv6', expr: 'port-unreachable' } },
  },
};

const PROTO = { TCP: 'tcp', UDP: 'udp', SCTP: 'sctp' } as const;
const SCHEDULER: SchedulerName = 'random';

/** An interval-set element for a prefix: nft lists full-length prefixes as plain addresses. */
function cidrElem(c: CIDR): Expr {
  const addr = formatIP(c);
  return c.len === c.bytes.length * 8 ? addr : prefix(addr, c.len);
}

/** The chains and sets every table has, with settings-derived elements. */
function staticTable(fi: FamilyInfo, config: ProxyConfig, nodeIPs: string[]): TableState {
  const { family, l3, addrType } = fi;
  const t = emptyTable({
    family,
    name: TABLE,
    comment: 'rules for Kubernetes services, managed by nftproxy',
  });
  const daddr = payload(l3, 'daddr');
  const saddr = payload(l3, 'saddr');
  const vipKey = concat(daddr, meta('l4proto'), payload('th', 'dport'));
  const portKey = concat(meta('l4proto'), payload('th', 'dport'));
  const newConn = match(ct('state'), 'in', 'new');

  const set = (
    name: string,
    type: string | string[],
    extra: { flags?: string[]; map?: string | string[] } = {},
  ) => t.sets.set(name, { def: { family, table: TABLE, name, type, ...extra }, elems: new Map() });
  const vipType = [addrType, 'inet_proto', 'inet_service'];
  const portType = ['inet_proto', 'inet_service'];
  set(Sets.clusterIPs, addrType);
  set(Sets.clusterCIDRs, addrType, { flags: ['interval'] });
  set(Sets.nodeportAddresses, addrType, { flags: ['interval'] });
  set(Sets.masqueradeServices, vipType);
  set(Sets.masqueradeNodeports, portType);
  set(Sets.hairpin, [addrType, addrType]);
  set(Maps.serviceIPs, vipType, { map: 'verdict' });
  set(Maps.serviceNodeports, portType, { map: 'verdict' });
  set(Maps.noEndpointServices, vipType, { map: 'verdict' });
  set(Maps.noEndpointNodeports, portType, { map: 'verdict' });
  const backendData = `${addrType} . inet_service`;
  const backendTypeofData = concat(daddr, payload('th', 'dport'));
  t.sets.set(Maps.backends, {
    def: {
      family,
      table: TABLE,
      name: Maps.backends,
      type: [...vipType, 'integer'],
      map: backendData,
      typeof: {
        key: concat(daddr, meta('l4proto'), payload('th', 'dport'), numgenRandom(1)),
        data: backendTypeofData,
      },
    },
    elems: new Map(),
  });
  t.sets.set(Maps.nodeportBackends, {
    def: {
      family,
      table: TABLE,
      name: Maps.nodeportBackends,
      type: [...portType, 'integer'],
      map: backendData,
      typeof: {
        key: concat(meta('l4proto'), payload('th', 'dport'), numgenRandom(1)),
        data: backendTypeofData,
      },
    },
    elems: new Map(),
  });

  const addElems = (name: string, elems: Expr[]) => {
    for (const e of elems) t.sets.get(name)!.elems.set(elemKey(e), e);
  };
  const ofFamily = (cs: CIDR[]) => cs.filter((c) => c.version === fi.version);
  const clusterCIDRs = ofFamily(config.clusterCIDRs);
  addElems(Sets.clusterCIDRs, clusterCIDRs.map(cidrElem));
  // `primary` adds the node's own IPs. Normalised together with the CIDRs, since an
  // interval set refuses overlapping elements (10.0.0.0/8 and 10.0.0.5).
  const primary = config.nodePortPrimary
    ? nodeIPs.map((ip) => parseCIDR(`${ip}/${fi.version === 4 ? 32 : 128}`)!)
    : [];
  const nodePortAddrs = normalizeCIDRs([...ofFamily(config.nodePortCIDRs), ...primary]);
  addElems(Sets.nodeportAddresses, nodePortAddrs.map(cidrElem));
  // As kube-proxy: a family without any nodeport address of its own answers on all of its
  // local addresses.
  const nodePortsRestricted = nodePortAddrs.length > 0;

  const chain = (
    name: string,
    rules: Stmt[][],
    base?: {
      type: 'nat' | 'filter';
      hook: 'prerouting' | 'input' | 'forward' | 'output' | 'postrouting';
      prio: number;
    },
  ) =>
    t.chains.set(name, {
      chain: { family, table: TABLE, name, ...(base ? { ...base, policy: 'accept' as const } : {}) },
      rules,
    });

  chain(Chains.reject, [[{ reject: { type: 'tcp reset' } }], [fi.reject]]);
  chain(Chains.markForMasquerade, [
    [{ mangle: { key: meta('mark'), value: { '|': [meta('mark'), MASQUERADE_MARK] } } }],
  ]);
  chain(Chains.masquerading, [
    [
      match(ct('status'), 'in', 'dnat'),
      match(concat(saddr, daddr), '==', setRef(Sets.hairpin)),
      jump(Chains.markForMasquerade),
    ],
    [match({ '&': [meta('mark'), MASQUERADE_MARK] }, '==', 0), ret()],
    [{ mangle: { key: meta('mark'), value: { '^': [meta('mark'), MASQUERADE_MARK] } } }],
    [{ masquerade: { flags: 'fully-random' } }],
  ]);

  const services: Stmt[][] = [];
  if (config.masqueradeAll) {
    services.push([match(daddr, '==', setRef(Sets.clusterIPs)), jump(Chains.markForMasquerade)]);
  } else if (clusterCIDRs.length) {
    services.push([
      match(daddr, '==', setRef(Sets.clusterIPs)),
      match(saddr, '!=', setRef(Sets.clusterCIDRs)),
      jump(Chains.markForMasquerade),
    ]);
  }
  services.push([match(vipKey, '==', setRef(Sets.masqueradeServices)), jump(Chains.markForMasquerade)]);
  services.push([vmap(vipKey, Maps.serviceIPs)]);
  const localNodePort: Stmt[] = [match(daddr, '!=', fi.loopback)];
  if (nodePortsRestricted) localNodePort.push(match(daddr, '==', setRef(Sets.nodeportAddresses)));
  services.push([match(fibDaddrType(), '==', 'local'), ...localNodePort, jump(Chains.nodeports)]);
  chain(Chains.services, services);
  chain(Chains.nodeports, [
    [match(portKey, '==', setRef(Sets.masqueradeNodeports)), jump(Chains.markForMasquerade)],
    [vmap(portKey, Maps.serviceNodeports)],
  ]);
  chain(Chains.serviceEndpointsCheck, [[vmap(vipKey, Maps.noEndpointServices)]]);
  chain(Chains.nodeportEndpointsCheck, [[...localNodePort, vmap(portKey, Maps.noEndpointNodeports)]]);
  chain(Chains.clusterIPsCheck, [[match(daddr, '==', setRef(Sets.clusterIPs)), goto(Chains.reject)]]);

  chain(BaseChains.natPrerouting, [[jump(Chains.services)]], {
    type: 'nat',
    hook: 'prerouting',
    prio: Priority.dstnat,
  });
  chain(BaseChains.natOutput, [[jump(Chains.services)]], {
    type: 'nat',
    hook: 'output',
    prio: Priority.dstnat,
  });
  chain(BaseChains.natPostrouting, [[jump(Chains.masquerading)]], {
    type: 'nat',
    hook: 'postrouting',
    prio: Priority.srcnat,
  });
  chain(
    BaseChains.filterInput,
    [
      [newConn, jump(Chains.nodeportEndpointsCheck)],
      [newConn, jump(Chains.serviceEndpointsCheck)],
    ],
    { type: 'filter', hook: 'input', prio: Priority.filterPreDnat },
  );
  chain(
    BaseChains.filterForward,
    [
      [newConn, jump(Chains.serviceEndpointsCheck)],
      [newConn, jump(Chains.clusterIPsCheck)],
    ],
    { type: 'filter', hook: 'forward', prio: Priority.filterPreDnat },
  );
  chain(BaseChains.filterOutput, [[newConn, jump(Chains.serviceEndpointsCheck)]], {
    type: 'filter',
    hook: 'output',
    prio: Priority.filterPreDnat,
  });
  chain(BaseChains.filterOutputPostDnat, [[newConn, jump(Chains.clusterIPsCheck)]], {
    type: 'filter',
    hook: 'output',
    prio: Priority.filterPostDnat,
  });
  return t;
}

/** The pick chain's single rule: DNAT to the backend in the slot numgen draws. */
function pickRule(fi: FamilyInfo, kind: DispatchKind, slots: number): Stmt[] {
  const lookup =
    kind === 'service'
      ? concat(payload(fi.l3, 'daddr'), meta('l4proto'), payload('th', 'dport'), numgenRandom(slots))
      : concat(meta('l4proto'), payload('th', 'dport'), numgenRandom(slots));
  const data = setRef(kind === 'service' ? Maps.backends : Maps.nodeportBackends);
  return [{ dnat: { family: fi.family, addr: { map: { key: lookup, data } } } }];
}

/**
 * Everything one address (or NodePort) of one service port puts in a table. Units are the
 * grain of conflict handling: two services cannot own the same VIP:port or NodePort.
 */
interface DispatchUnit {
  family: Family;
  /** Conflict key: `vip 10.0.0.1 . tcp . 80` or `nodeport tcp . 30080`. */
  claim: string;
  /** For messages: `10.0.0.1:80/TCP`, `NodePort 30080/TCP`. */
  label: string;
  elems: { set: string; elem: Elem }[];
  entry: DispatchEntry;
  /** The pick chain the unit's dispatch entry jumps to (none when rejecting). */
  pick?: { kind: DispatchKind; slots: number };
}

/** What one service contributes to the ruleset. */
interface ServiceContribution {
  units: DispatchUnit[];
  diagnostics: Diagnostic[];
}

function compileService(svc: Service, slices: readonly EndpointSlice[]): ServiceContribution {
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
      const vipUnit = (vip: string, kind: DispatchEntry['kind']): DispatchUnit => {
        const masquerade = kind !== 'clusterIP';
        const key = concat(vip, proto, sp.port);
        const elems: DispatchUnit['elems'] = [];
        if (n === 0) {
          elems.push({ set: Maps.noEndpointServices, elem: [key, goto(Chains.reject)] });
        } else {
          elems.push({ set: Maps.serviceIPs, elem: [key, goto(pickChainName('service', SCHEDULER, n))] });
          backends.forEach((b, slot) =>
            elems.push({
              set: Maps.backends,
              elem: [concat(vip, proto, sp.port, slot), concat(b.ip, b.port)],
            }),
          );
          if (masquerade) elems.push({ set: Sets.masqueradeServices, elem: key });
        }
        return {
          family,
          claim: `vip ${elemKey(key)}`,
          label: `${formatHostPort(vip, sp.port)}/${sp.protocol}`,
          elems,
          entry: entry(kind, vip),
          ...(n ? { pick: { kind: 'service' as const, slots: n } } : {}),
        };
      };
      const cip = vipUnit(clusterIP, 'clusterIP');
      cip.elems.push({ set: Sets.clusterIPs, elem: clusterIP });
      out.units.push(cip);
      for (const vip of ipsOf(svc.externalIPs, fi.version)) out.units.push(vipUnit(vip, 'externalIP'));
      for (const vip of ipsOf(lbIPs, fi.version)) out.units.push(vipUnit(vip, 'loadBalancerIP'));

      if (hasNodePorts && sp.nodePort) {
        const key = concat(proto, sp.nodePort);
        const elems: DispatchUnit['elems'] = [];
        if (n === 0) {
          elems.push({ set: Maps.noEndpointNodeports, elem: [key, goto(Chains.reject)] });
        } else {
          elems.push({
            set: Maps.serviceNodeports,
            elem: [key, goto(pickChainName('nodeport', SCHEDULER, n))],
          });
          backends.forEach((b, slot) =>
            elems.push({
              set: Maps.nodeportBackends,
              elem: [concat(proto, sp.nodePort!, slot), concat(b.ip, b.port)],
            }),
          );
          elems.push({ set: Sets.masqueradeNodeports, elem: key });
        }
        out.units.push({
          family,
          claim: `nodeport ${elemKey(key)}`,
          label: `NodePort ${sp.nodePort}/${sp.protocol}`,
          elems,
          entry: entry('nodePort'),
          ...(n ? { pick: { kind: 'nodeport' as const, slots: n } } : {}),
        });
      }
    }
  }
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

const cmp = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/** Whether the proxy should program this service at all. */
function proxied(svc: Service): boolean {
  return (
    svc.type !== ServiceType.ExternalName &&
    !svc.headless &&
    svc.clusterIPs.length > 0 &&
    svc.metadata.labels[Labels.serviceProxyName] === undefined &&
    svc.metadata.labels[Labels.headless] === undefined
  );
}

/** This node's IPs: from the settings, else from its Node object. */
export function nodeIPsOf(state: ClusterState, config: ProxyConfig): string[] {
  if (config.nodeIPs.length) return config.nodeIPs;
  const node = state.nodes.find((n) => n.metadata.name === config.nodeName);
  return node?.addresses.map((a) => a.address) ?? [];
}

/** Compiles the whole cluster state into the desired ruleset. */
export function compile(state: ClusterState, config: ProxyConfig): CompileResult {
  const diagnostics: Diagnostic[] = [];
  const stats: CompileStats = { services: 0, dispatchEntries: 0, endpoints: 0, skipped: 0 };
  const nodeIPs = nodeIPsOf(state, config);
  const ruleset = emptyRuleset();
  for (const family of FAMILIES) {
    const fi = FAMILY_INFO[family];
    ruleset.tables.set(tableKey(family, TABLE), staticTable(fi, config, ipsOf(nodeIPs, fi.version)));
  }

  const slicesByService = new Map<string, EndpointSlice[]>();
  for (const s of state.endpointSlices) {
    const k = `${s.metadata.namespace}/${s.serviceName}`;
    let list = slicesByService.get(k);
    if (!list) slicesByService.set(k, (list = []));
    list.push(s);
  }

  const entries: DispatchEntry[] = [];
  const claims = new Map<string, string>();
  const picks = new Map<string, { family: Family; kind: DispatchKind; slots: number }>();
  const pickKey = (family: Family, kind: DispatchKind, slots: number) =>
    `${family} ${kind} ${String(slots).padStart(6, '0')}`;
  for (const family of FAMILIES) {
    for (const kind of ['service', 'nodeport'] as const) {
      for (let slots = 1; slots <= PRECREATED_PICK_SLOTS; slots++)
        picks.set(pickKey(family, kind, slots), { family, kind, slots });
    }
  }
  const hairpin = new Set<string>();
  const sorted = [...state.services].sort(
    // Plain code-unit order: localeCompare (ICU) costs seconds at 50k services.
    (a, b) => cmp(a.metadata.namespace, b.metadata.namespace) || cmp(a.metadata.name, b.metadata.name),
  );
  for (const svc of sorted) {
    if (!proxied(svc)) {
      stats.skipped++;
      continue;
    }
    const ref = objectRef('Service', svc.metadata);
    const contribution = compileService(
      svc,
      slicesByService.get(`${svc.metadata.namespace}/${svc.metadata.name}`) ?? [],
    );
    diagnostics.push(...contribution.diagnostics);
    let programmed = false;
    for (const unit of contribution.units) {
      const claimKey = `${unit.family} ${unit.claim}`;
      const owner = claims.get(claimKey);
      if (owner !== undefined) {
        diagnostics.push({
          severity: 'error',
          object: ref,
          message: `${unit.label} is already used by ${owner}; not programmed for this service`,
        });
        continue;
      }
      claims.set(claimKey, ref);
      programmed = true;
      entries.push(unit.entry);
      const table = ruleset.tables.get(tableKey(unit.family, TABLE))!;
      for (const { set, elem } of unit.elems) table.sets.get(set)!.elems.set(elemKey(elem), elem);
      if (unit.pick) {
        stats.dispatchEntries++;
        stats.endpoints += unit.pick.slots;
        picks.set(pickKey(unit.family, unit.pick.kind, unit.pick.slots), {
          family: unit.family,
          ...unit.pick,
        });
      }
      for (const b of unit.entry.backends) hairpin.add(`${unit.family} ${b.ip}`);
    }
    if (programmed) stats.services++;
  }

  for (const key of [...picks.keys()].sort()) {
    const { family, kind, slots } = picks.get(key)!;
    const name = pickChainName(kind, SCHEDULER, slots);
    ruleset.tables.get(tableKey(family, TABLE))!.chains.set(name, {
      chain: { family, table: TABLE, name },
      rules: [pickRule(FAMILY_INFO[family], kind, slots)],
    });
  }
  for (const entry of [...hairpin].sort()) {
    const [family, ip] = entry.split(' ') as [Family, string];
    const elem = concat(ip, ip);
    ruleset.tables.get(tableKey(family, TABLE))!.sets.get(Sets.hairpin)!.elems.set(elemKey(elem), elem);
  }
  return { ruleset, diagnostics, stats, entries };
}

/** The addresses where this ruleset's tracer should consider traffic "local". */
export function localAddresses(state: ClusterState, config: ProxyConfig): string[] {
  return [...nodeIPsOf(state, config), '127.0.0.1', '::1'].filter((ip) => parseIP(ip));
}
