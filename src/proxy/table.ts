/**
 * The fixed part of each table: every chain, set and map, and the elements that come from
 * settings rather than services (cluster CIDRs, NodePort addresses). Plus the pick chains,
 * one per kind and slot count.
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
  type Expr,
  type Stmt,
} from '../nft/ir.js';
import { type ChainState, elemKey, emptyTable, type TableState } from '../nft/ruleset.js';
import { type CIDR, formatIP, normalizeCIDRs, parseCIDR } from '../net/ip.js';
import type { ProxyConfig } from './config.js';
import type { FamilyInfo } from './family.js';
import {
  BaseChains,
  Chains,
  type DispatchKind,
  Maps,
  MASQUERADE_MARK,
  pickChainName,
  Priority,
  type SchedulerName,
  Sets,
  TABLE,
} from './names.js';

/** An interval-set element for a prefix: nft lists full-length prefixes as plain addresses. */
function cidrElem(c: CIDR): Expr {
  const addr = formatIP(c);
  return c.len === c.bytes.length * 8 ? addr : prefix(addr, c.len);
}

/** The chains and sets every table has, with settings-derived elements. */
export function staticTable(fi: FamilyInfo, config: ProxyConfig, nodeIPs: string[]): TableState {
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

/** The pick chain for `slots` slots of one kind, in one family's table. */
export function pickChain(
  fi: FamilyInfo,
  kind: DispatchKind,
  scheduler: SchedulerName,
  slots: number,
): ChainState {
  return {
    chain: { family: fi.family, table: TABLE, name: pickChainName(kind, scheduler, slots) },
    rules: [pickRule(fi, kind, slots)],
  };
}
