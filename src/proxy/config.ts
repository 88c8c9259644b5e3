/**
 * Node-level settings of the compiler: who this node is and how it masquerades.
 */
import { type CIDR, formatCIDR, normalizeCIDRs, parseCIDR, canonicalIP, versionOf } from '../net/ip.js';
import { DEFAULT_AFFINITY_MAP_SIZE } from './names.js';
import { IFNAME } from '../nft/render.js';

/** Settings as a user gives them (flags, config file). */
export interface ProxyConfigInput {
  /** This node's name (EndpointSlice `nodeName`, Node object). */
  nodeName: string;
  /** Pod network CIDRs. Traffic from outside them to a ClusterIP is masqueraded. */
  clusterCIDRs?: string[] | undefined;
  /**
   * The ranges ClusterIPs are allocated from (the API server's --service-cluster-ip-range),
   * per family. Traffic to an address in them that no Service holds is dropped, and external
   * IPs inside them are refused. ServiceCIDR objects add to these.
   */
  serviceCIDRs?: string[] | undefined;
  /**
   * Where NodePorts answer: CIDRs, `primary` for the node's own IPs, or `all`. Empty or `all`:
   * every local address except loopback (kube-proxy's iptables mode; its nftables mode
   * defaults to `primary`). Loopback CIDRs are refused: NodePorts never answer there.
   */
  nodePortAddresses?: string[] | undefined;
  /** Masquerade all traffic to ClusterIPs, not only that from outside the cluster CIDRs. */
  masqueradeAll?: boolean | undefined;
  /**
   * How traffic from pods is told apart, as kube-proxy's detectLocalMode: `ClusterCIDR` (the
   * default), source in `clusterCIDRs`; `NodeCIDR`, source in this node's Node
   * `spec.podCIDRs`; `BridgeInterface`, arriving on `podBridgeInterface`;
   * `InterfaceNamePrefix`, arriving on an interface named `podInterfaceNamePrefix...`.
   */
  detectLocalMode?: string | undefined;
  /** BridgeInterface mode: the bridge pods are attached to (`cbr0`). */
  podBridgeInterface?: string | undefined;
  /** InterfaceNamePrefix mode: the prefix of the node's pod interfaces (`veth`, `cali`). */
  podInterfaceNamePrefix?: string | undefined;
  /**
   * Program only the services whose `service.kubernetes.io/service-proxy-name` label is this
   * (empty, the default: only those without the label).
   */
  serviceProxyName?: string | undefined;
  /** This node's IPs; when empty, taken from the Node object's addresses. */
  nodeIPs?: string[] | undefined;
  /** Size limit of the ClientIP affinity map (clients x affinity addresses), per family. */
  affinityMapSize?: number | undefined;
  /**
   * A counter on every backends map element (connections per service endpoint, read by
   * `nftproxy status`). Costs kernel memory: 16 bytes per element per CPU.
   */
  endpointCounters?: boolean | undefined;
}

/** Validated settings. */
export interface ProxyConfig {
  nodeName: string;
  clusterCIDRs: CIDR[];
  /** From the settings; `serviceCIDRsOf` adds the cluster's ServiceCIDR objects. */
  serviceCIDRs: CIDR[];
  /** Parsed CIDRs; `primary` is kept as a flag and resolved against the node's IPs. */
  nodePortCIDRs: CIDR[];
  nodePortPrimary: boolean;
  masqueradeAll: boolean;
  /** '' when not set. */
  serviceProxyName: string;
  detectLocalMode: DetectLocalMode;
  /**
   * For the interface modes: what `iifname` matches for traffic from pods (`cbr0`, `veth*`).
   */
  podInterface?: string;
  nodeIPs: string[];
  affinityMapSize: number;
  endpointCounters: boolean;
}

/** kube-proxy's detectLocalMode values nftproxy implements. */
export const DetectLocalModes = [
  'ClusterCIDR',
  'NodeCIDR',
  'BridgeInterface',
  'InterfaceNamePrefix',
] as const;
export type DetectLocalMode = (typeof DetectLocalModes)[number];

/** Invalid settings; `problems` has one line per bad value. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  ${problems.join('\n  ')}`);
  }
}

/** Validates settings; throws `ConfigError` listing every problem. */
export function parseProxyConfig(input: ProxyConfigInput): ProxyConfig {
  const problems: string[] = [];
  const cidrs = (values: string[] | undefined, what: string, keywords: boolean): [CIDR[], boolean] => {
    const out: CIDR[] = [];
    let primary = false;
    for (const v of values ?? []) {
      if (keywords && v === 'primary') primary = true;
      else if (keywords && v === 'all')
        continue; // every local address: as if none were given
      else {
        const c = parseCIDR(v);
        if (!c) problems.push(`${what}: not a valid CIDR: ${JSON.stringify(v)}`);
        else if (keywords && isLoopback(c))
          problems.push(
            `${what}: ${JSON.stringify(v)} is loopback, where NodePorts never answer (as in kube-proxy); use a node address range, primary or all`,
          );
        else out.push(c);
      }
    }
    if (keywords && (values ?? []).includes('all') && (values ?? []).length > 1)
      problems.push(
        `${what}: all means every local address; it cannot be combined with ${JSON.stringify((values ?? []).filter((v) => v !== 'all'))}`,
      );
    return [normalizeCIDRs(out), primary];
  };
  if (!input.nodeName) problems.push('node name: required (flag --node, or NODE_NAME)');
  const detectLocalMode = input.detectLocalMode || 'ClusterCIDR';
  if (!(DetectLocalModes as readonly string[]).includes(detectLocalMode))
    problems.push(
      `detect local mode: want one of ${DetectLocalModes.join(', ')}, got ${JSON.stringify(detectLocalMode)}`,
    );
  let podInterface: string | undefined;
  const iface = (what: string, v: string | undefined, suffix: string) => {
    if (!v) problems.push(`${what}: required with detect local mode ${detectLocalMode}`);
    else if (!IFNAME.test(v + suffix) || v.includes('*'))
      problems.push(
        `${what}: not an interface name (up to 15 of A-Z a-z 0-9 _ . : @ -): ${JSON.stringify(v)}`,
      );
    else podInterface = v + suffix;
  };
  if (detectLocalMode === 'BridgeInterface') iface('pod bridge interface', input.podBridgeInterface, '');
  if (detectLocalMode === 'InterfaceNamePrefix')
    iface('pod interface name prefix', input.podInterfaceNamePrefix, '*');
  const proxyName = input.serviceProxyName ?? '';
  // A label value: up to 63 characters, alphanumerics with - _ . inside.
  if (proxyName && !/^(?=.{1,63}$)[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/.test(proxyName))
    problems.push(`service proxy name: not a valid label value: ${JSON.stringify(proxyName)}`);
  const [clusterCIDRs] = cidrs(input.clusterCIDRs, 'cluster CIDR', false);
  const [serviceCIDRs] = cidrs(input.serviceCIDRs, 'service CIDR', false);
  const [nodePortCIDRs, nodePortPrimary] = cidrs(input.nodePortAddresses, 'nodeport address', true);
  const nodeIPs: string[] = [];
  for (const ip of input.nodeIPs ?? []) {
    const c = canonicalIP(ip);
    if (c) nodeIPs.push(c);
    else problems.push(`node IP: not a valid IP address: ${JSON.stringify(ip)}`);
  }
  const affinityMapSize = input.affinityMapSize ?? DEFAULT_AFFINITY_MAP_SIZE;
  if (!Number.isInteger(affinityMapSize) || affinityMapSize < 1 || affinityMapSize > 2 ** 24)
    problems.push(
      `affinity map size: must be a whole number from 1 to ${2 ** 24}: ${JSON.stringify(affinityMapSize)}`,
    );
  if (problems.length) throw new ConfigError(problems);
  return {
    nodeName: input.nodeName,
    clusterCIDRs,
    serviceCIDRs,
    nodePortCIDRs,
    nodePortPrimary,
    masqueradeAll: input.masqueradeAll ?? false,
    serviceProxyName: input.serviceProxyName ?? '',
    detectLocalMode: detectLocalMode as DetectLocalMode,
    ...(podInterface ? { podInterface } : {}),
    nodeIPs,
    affinityMapSize,
    endpointCounters: input.endpointCounters ?? true,
  };
}

/** Whether every address of the CIDR is a loopback address (127.0.0.0/8, ::1). */
function isLoopback(c: CIDR): boolean {
  return c.version === 4 ? c.bytes[0] === 127 && c.len >= 8 : c.len === 128 && formatCIDR(c) === '::1/128';
}

/** The addresses (canonical) of one IP version. */
export function ipsOf(ips: string[], version: 4 | 6): string[] {
  return ips.filter((ip) => versionOf(ip) === version);
}
