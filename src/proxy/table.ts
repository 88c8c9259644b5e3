/**
 * The fixed part of each table: every chain, set and map, and the elements that come from
 * settings rather than services (cluster and service CIDRs, NodePort addresses). Plus the pick chains,
 * one per kind and slot count.
 */
import {
  concat,
  ct,
  ctOriginal,
  fibDaddrType,
  fibSaddrType,
  jhash,
  numgenInc,
  goto,
  jump,
  match,
  meta,
  numgenRandom,
  payload,
  ret,
  setRef,
  vmap,
  type Expr,
  type Stmt,
} from '../nft/ir.js';
import { type ChainState, emptyTable, type TableState } from '../nft/ruleset.js';
import { type CIDR, formatIP, normalizeCIDRs, parseCIDR } from '../net/ip.js';
import type { ProxyConfig } from './config.js';
import type { FamilyInfo } from './family.js';
import {
  affinityChainName,
  BaseChains,
  Chains,
  HASH_SEED,
  LOCAL_SLOT_BASE,
  Maps,
  MASQUERADE_MARK,
  pickChainName,
  type PickSpec,
  Priority,
  Sets,
  TABLE,
} from './names.js';

/** The L4 protocols services use, in nft's names. */
const PROTOCOLS = ['tcp', 'udp', 'sctp'] as const;

/** A prefix as an interval-set element line: nft lists full-length prefixes as plain addresses. */
export function cidrText(c: CIDR): string {
  const addr = formatIP(c);
  return c.len === c.bytes.length * 8 ? addr : `${addr}/${c.len}`;
}

/** A table's fixed part: every chain and set, and the element lines that come from settings. */
export interface StaticTable {
  /** Chains with their rules, and set declarations; no elements. */
  table: TableState;
  /** Element lines of sets filled from settings (cluster CIDRs, NodePort addresses), by set. */
  lines: Map<string, string[]>;
}

/** The chains and sets every table has, with settings-derived element lines. */
export function staticTable(fi: FamilyInfo, config: ProxyConfig, nodeIPs: string[]): StaticTable {
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
  set(Sets.serviceCIDRs, addrType, { flags: ['interval'] });
  set(Sets.nodeportAddresses, addrType, { flags: ['interval'] });
  set(Sets.masqueradeServices, vipType);
  set(Sets.masqueradeNodeports, portType);
  set(Sets.masqueradeFromNode, vipType);
  set(Sets.masqueradeNodeportsFromNode, portType);
  set(Sets.hairpin, [addrType, addrType]);
  set(Maps.serviceIPs, vipType, { map: 'verdict' });
  set(Maps.serviceNodeports, portType, { map: 'verdict' });
  set(Maps.noEndpointServices, vipType, { map: 'verdict' });
  set(Maps.noEndpointNodeports, portType, { map: 'verdict' });
  set(Maps.localServiceIPs, vipType, { map: 'verdict' });
  set(Maps.localServiceNodeports, portType, { map: 'verdict' });
  set(Sets.noMasqueradeServices, vipType);
  set(Sets.affinityServices, vipType);
  set(Sets.affinityNodeports, portType);
  set(Maps.affinityTimeouts, vipType, { map: 'verdict' });
  set(Maps.affinityNodeportTimeouts, portType, { map: 'verdict' });
  set(Sets.firewallServices, vipType);
  set(Sets.firewallAllow, [...vipType, addrType], { flags: ['interval'] });
  set(Sets.firewallDeny, [...vipType, addrType], { flags: ['interval'] });
  set(Sets.firewallNodeports, portType);
  set(Sets.firewallNodeportAllow, [...portType, addrType], { flags: ['interval'] });
  set(Sets.firewallNodeportDeny, [...portType, addrType], { flags: ['interval'] });
  // Filled by the kernel: client . address . proto . port -> the endpoint it got. Plain
  // datatypes (not typeof), so chains that update it can be added to a live table.
  t.sets.set(Maps.affinity, {
    def: {
      family,
      table: TABLE,
      name: Maps.affinity,
      type: [addrType, ...vipType],
      map: [addrType, 'inet_service'],
      size: config.affinityMapSize,
      flags: ['timeout', 'dynamic'],
    },
    elems: new Map(),
  });
  const backendData = `${addrType} . inet_service`;
  // Connections per service endpoint for `nftproxy status`: the lookup that picks an
  // endpoint counts the first packet of each connection on the element it picked.
  const counted = config.endpointCounters ? { stmt: [{ counter: null }] } : {};
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
      ...counted,
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
      ...counted,
    },
    elems: new Map(),
  });

  const lines = new Map<string, string[]>();
  const addElems = (name: string, elems: string[]) => {
    if (elems.length) lines.set(name, elems);
  };
  const ofFamily = (cs: CIDR[]) => cs.filter((c) => c.version === fi.version);
  const clusterCIDRs = ofFamily(config.clusterCIDRs);
  addElems(Sets.clusterCIDRs, clusterCIDRs.map(cidrText));
  addElems(Sets.serviceCIDRs, ofFamily(config.serviceCIDRs).map(cidrText));
  // `primary` adds the node's own IPs. Normalised together with the CIDRs, since an
  // interval set refuses overlapping elements (10.0.0.0/8 and 10.0.0.5).
  const primary = config.nodePortPrimary
    ? nodeIPs.map((ip) => parseCIDR(`${ip}/${fi.version === 4 ? 32 : 128}`)!)
    : [];
  const nodePortAddrs = normalizeCIDRs([...ofFamily(config.nodePortCIDRs), ...primary]);
  addElems(Sets.nodeportAddresses, nodePortAddrs.map(cidrText));
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
  // Not from a pod of the cluster: by source (cluster CIDRs, or this node's pod CIDRs), or by
  // the interface it arrives on (kube-proxy's detectLocalMode). Unknown without either.
  const notFromPods: Stmt | undefined = config.podInterface
    ? match(meta('iifname'), '!=', config.podInterface)
    : clusterCIDRs.length
      ? match(saddr, '!=', setRef(Sets.clusterCIDRs))
      : undefined;
  // ProxyPolicy `masquerade: never` exempts a service port from the ClusterIP rules.
  const notExempt = match(vipKey, '!=', setRef(Sets.noMasqueradeServices));
  if (config.masqueradeAll) {
    services.push([match(daddr, '==', setRef(Sets.clusterIPs)), notExempt, jump(Chains.markForMasquerade)]);
  } else if (notFromPods) {
    services.push([
      match(daddr, '==', setRef(Sets.clusterIPs)),
      notFromPods,
      notExempt,
      jump(Chains.markForMasquerade),
    ]);
  }
  services.push([match(vipKey, '==', setRef(Sets.masqueradeServices)), jump(Chains.markForMasquerade)]);
  const fromNode = match(fibSaddrType(), '==', 'local');
  services.push([
    fromNode,
    match(vipKey, '==', setRef(Sets.masqueradeFromNode)),
    jump(Chains.markForMasquerade),
  ]);
  // ClientIP affinity: a client with a live entry goes back to its endpoint; no entry, no
  // match, and the pick below chooses (affinity-record remembers the choice).
  const affinityKey = concat(saddr, daddr, meta('l4proto'), payload('th', 'dport'));
  const affinityDnat: Stmt = {
    dnat: { family, addr: { map: { key: affinityKey, data: setRef(Maps.affinity) } } },
  };
  services.push([match(vipKey, '==', setRef(Sets.affinityServices)), affinityDnat]);
  // externalTrafficPolicy Local: sources outside the cluster (not pods, not this node) use
  // this node's endpoints only, or are dropped.
  const fromOutside: Stmt[] = [...(notFromPods ? [notFromPods] : []), match(fibSaddrType(), '!=', 'local')];
  services.push([...fromOutside, vmap(vipKey, Maps.localServiceIPs)]);
  services.push([vmap(vipKey, Maps.serviceIPs)]);
  const localNodePort: Stmt[] = [match(daddr, '!=', fi.loopback)];
  if (nodePortsRestricted) localNodePort.push(match(daddr, '==', setRef(Sets.nodeportAddresses)));
  const toNodePort: Stmt[] = [match(fibDaddrType(), '==', 'local'), ...localNodePort];
  services.push([...toNodePort, jump(Chains.nodeports)]);
  chain(Chains.services, services);
  chain(Chains.nodeports, [
    [match(portKey, '==', setRef(Sets.masqueradeNodeports)), jump(Chains.markForMasquerade)],
    [
      fromNode,
      match(portKey, '==', setRef(Sets.masqueradeNodeportsFromNode)),
      jump(Chains.markForMasquerade),
    ],
    [match(portKey, '==', setRef(Sets.affinityNodeports)), affinityDnat],
    [...fromOutside, vmap(portKey, Maps.localServiceNodeports)],
    [vmap(portKey, Maps.serviceNodeports)],
  ]);
  // After DNAT, remember the endpoint of affinity connections, keyed by the original
  // destination. `ct original proto-dst` needs the protocol stated to have a type.
  const recordRules: Stmt[][] = [];
  for (const [dispatchKey, timeouts] of [
    [concat(ctOriginal(`${l3} daddr`), meta('l4proto'), ctOriginal('proto-dst')), Maps.affinityTimeouts],
    [concat(meta('l4proto'), ctOriginal('proto-dst')), Maps.affinityNodeportTimeouts],
  ] as const) {
    for (const proto of PROTOCOLS) {
      recordRules.push([
        match(meta('l4proto'), '==', proto),
        match(ct('status'), 'in', 'dnat'),
        vmap(dispatchKey, timeouts),
      ]);
    }
  }
  chain(Chains.affinityRecord, recordRules);
  // Source ranges: a refused source is dropped before DNAT, on new connections.
  const srcKey = (k: Expr) => concat(...(k as { concat: Expr[] }).concat, saddr);
  chain(Chains.firewall, [
    [match(srcKey(vipKey), '==', setRef(Sets.firewallDeny)), { drop: null }],
    [
      match(vipKey, '==', setRef(Sets.firewallServices)),
      match(srcKey(vipKey), '!=', setRef(Sets.firewallAllow)),
      { drop: null },
    ],
    [...toNodePort, match(srcKey(portKey), '==', setRef(Sets.firewallNodeportDeny)), { drop: null }],
    [
      ...toNodePort,
      match(portKey, '==', setRef(Sets.firewallNodeports)),
      match(srcKey(portKey), '!=', setRef(Sets.firewallNodeportAllow)),
      { drop: null },
    ],
  ]);
  chain(Chains.serviceEndpointsCheck, [[vmap(vipKey, Maps.noEndpointServices)]]);
  chain(Chains.nodeportEndpointsCheck, [[...localNodePort, vmap(portKey, Maps.noEndpointNodeports)]]);
  // A live ClusterIP's unused port is refused; an address of the range no service holds
  // is dropped (routed on, it would reach the default gateway).
  chain(Chains.clusterIPsCheck, [
    [match(daddr, '==', setRef(Sets.clusterIPs)), goto(Chains.reject)],
    [match(daddr, '==', setRef(Sets.serviceCIDRs)), { drop: null }],
  ]);

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
  chain(BaseChains.natPostrouting, [[jump(Chains.affinityRecord)], [jump(Chains.masquerading)]], {
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
  chain(BaseChains.filterPrerouting, [[newConn, jump(Chains.firewall)]], {
    type: 'filter',
    hook: 'prerouting',
    prio: Priority.filterPreDnat,
  });
  chain(
    BaseChains.filterOutput,
    [
      [newConn, jump(Chains.firewall)],
      [newConn, jump(Chains.serviceEndpointsCheck)],
    ],
    {
      type: 'filter',
      hook: 'output',
      prio: Priority.filterPreDnat,
    },
  );
  chain(BaseChains.filterOutputPostDnat, [[newConn, jump(Chains.clusterIPsCheck)]], {
    type: 'filter',
    hook: 'output',
    prio: Priority.filterPostDnat,
  });
  return { table: t, lines };
}

/** The slot expression of a pick chain: random, in turn, or a hash of the client address. */
function slotExpr(fi: FamilyInfo, p: PickSpec): Expr {
  const offset = p.pool === 'local' ? LOCAL_SLOT_BASE : 0;
  switch (p.scheduler) {
    case 'inc':
      return numgenInc(p.slots, offset);
    case 'hash':
      return jhash(payload(fi.l3, 'saddr'), p.slots, HASH_SEED, offset);
    default:
      return numgenRandom(p.slots, offset);
  }
}

/** The pick chain: its single rule DNATs to the backend in the slot it draws. */
export function pickChain(fi: FamilyInfo, p: PickSpec): ChainState {
  const slot = slotExpr(fi, p);
  const lookup =
    p.kind === 'service'
      ? concat(payload(fi.l3, 'daddr'), meta('l4proto'), payload('th', 'dport'), slot)
      : concat(meta('l4proto'), payload('th', 'dport'), slot);
  const data = setRef(p.kind === 'service' ? Maps.backends : Maps.nodeportBackends);
  return {
    chain: { family: fi.family, table: TABLE, name: pickChainName(p) },
    rules: [[{ dnat: { family: fi.family, addr: { map: { key: lookup, data } } } }]],
  };
}

/** The chain recording affinity with one timeout: an update per protocol. */
export function affinityChain(fi: FamilyInfo, timeoutSeconds: number): ChainState {
  return {
    chain: { family: fi.family, table: TABLE, name: affinityChainName(timeoutSeconds) },
    rules: PROTOCOLS.map((protocol) => [
      { affinityUpdate: { family: fi.family, map: Maps.affinity, protocol, timeout: timeoutSeconds } },
    ]),
  };
}
