/**
 * kube-proxy's nftables rulesets for a cluster, in the two shapes its nftables mode has
 * written (pkg/proxy/nftables), for the benchmark's synthetic clusters (IPv4, TCP, ClusterIP
 * and NodePort services):
 *
 * - 1.33-1.35: a `service-ips` verdict map for dispatch, then a chain per service port whose
 *   rule picks an endpoint with `numgen random` over an anonymous verdict map, and a chain per
 *   endpoint that marks hairpin traffic for masquerading and DNATs;
 * - 1.36 and later: the same dispatch, and a chain per service port that DNATs with an inline
 *   `numgen random mod N map { slot : address . port }`; hairpin traffic is found by a
 *   `hairpin-connections` set of endpoint . endpoint pairs; endpoint chains remain only for
 *   session affinity (none in these clusters).
 *
 * Chain names carry a hash and the service's name, as kube-proxy's do (their length is part
 * of the script nft parses). Both are models written from kube-proxy's source, not its output.
 */
import { createHash } from 'node:crypto';
import type { ClusterState } from '../../src/k8s/types.js';

/** A name's hash, as kube-proxy puts in chain names: 8 characters in nftables, 16 in iptables. */
const hash = (s: string, length = 8) =>
  createHash('sha256')
    .update(s)
    .digest('base64')
    .replace(/[^A-Za-z0-9]/g, '')
    .slice(0, length)
    .toUpperCase();

/** The kube-proxy nftables shapes, by the versions that write them. */
export type KubeProxyVersion = '1.33-1.35' | '1.36+';

/** The `nft -f` script that creates `table ip kube-proxy` for `cluster`, as `version` writes it. */
export function kubeProxyNftScript(
  cluster: ClusterState,
  clusterCIDR: string,
  version: KubeProxyVersion = '1.36+',
): string {
  const inlineDnat = version === '1.36+';
  const hairpin = new Set<string>();
  const serviceIPs: string[] = [];
  const nodePorts: string[] = [];
  const clusterIPs: string[] = [];
  const chains: string[] = [];
  const slices = new Map(cluster.endpointSlices.map((s) => [s.serviceName, s]));
  for (const svc of cluster.services) {
    const { namespace, name } = svc.metadata;
    const eps = slices.get(name)?.endpoints ?? [];
    for (const port of svc.ports) {
      const id = `${namespace}/${name}/tcp/${port.name}`;
      const service = `service-${hash(id)}-${id}`;
      const ip = svc.clusterIPs[0]!;
      clusterIPs.push(ip);
      if (inlineDnat) {
        for (const e of eps) hairpin.add(`${e.address} . ${e.address}`);
        const pick = eps.map((e, i) => `${i} : ${e.address} . ${port.targetPort}`).join(', ');
        const dnat = eps.length
          ? `\n    meta l4proto tcp dnat ip to numgen random mod ${eps.length} map { ${pick} }`
          : '';
        chains.push(
          `  chain ${service} {\n    ip daddr ${ip} tcp dport ${port.port} ip saddr != ${clusterCIDR} jump mark-for-masquerade${dnat}\n  }`,
        );
      }
      const endpointChains = (inlineDnat ? [] : eps).map((e) => {
        const chain = `endpoint-${hash(`${id}__${e.address}`)}-${id}__${e.address}/${port.targetPort}`;
        chains.push(
          `  chain ${chain} {\n    ip saddr ${e.address} jump mark-for-masquerade\n    meta l4proto tcp dnat to ${e.address}:${port.targetPort}\n  }`,
        );
        return chain;
      });
      if (!inlineDnat) {
        const pick = endpointChains.map((c, i) => `${i} : goto ${c}`).join(', ');
        chains.push(
          `  chain ${service} {\n    ip daddr ${ip} tcp dport ${port.port} ip saddr != ${clusterCIDR} jump mark-for-masquerade\n    numgen random mod ${endpointChains.length} vmap { ${pick} }\n  }`,
        );
      }
      serviceIPs.push(`${ip} . tcp . ${port.port} : goto ${service}`);
      if (port.nodePort) {
        const external = `external-${hash(id)}-${id}`;
        chains.push(`  chain ${external} {\n    jump mark-for-masquerade\n    goto ${service}\n  }`);
        nodePorts.push(`tcp . ${port.nodePort} : goto ${external}`);
      }
    }
  }
  const elements = (xs: string[]) => (xs.length ? `\n    elements = { ${xs.join(',\n      ')} }` : '');
  return `table ip kube-proxy {
  set cluster-ips {
    type ipv4_addr${elements(clusterIPs)}
  }
  chain mark-for-masquerade {
    meta mark set meta mark or 0x4000
  }
${
  inlineDnat
    ? `  set hairpin-connections {
    type ipv4_addr . ipv4_addr${elements([...hairpin])}
  }
`
    : ''
}  chain masquerading {${inlineDnat ? '\n    ip saddr . ip daddr @hairpin-connections jump mark-for-masquerade' : ''}
    meta mark and 0x4000 == 0 return
    meta mark set meta mark xor 0x4000
    masquerade fully-random
  }
${chains.join('\n')}
  map service-ips {
    type ipv4_addr . inet_proto . inet_service : verdict${elements(serviceIPs)}
  }
  map service-nodeports {
    type inet_proto . inet_service : verdict${elements(nodePorts)}
  }
  chain services {
    ip daddr . meta l4proto . th dport vmap @service-ips
    fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports
  }
  chain nat-prerouting {
    type nat hook prerouting priority -100; policy accept;
    jump services
  }
  chain nat-output {
    type nat hook output priority -100; policy accept;
    jump services
  }
  chain nat-postrouting {
    type nat hook postrouting priority 100; policy accept;
    jump masquerading
  }
}
`;
}

/**
 * The nat table kube-proxy's iptables mode writes for `cluster`, as `iptables-restore`
 * input: KUBE-SERVICES holds one rule per service port, matched in order (so the last
 * service's first packet is compared against every rule before it); each service chain
 * marks off-cluster sources for masquerading and picks an endpoint with `statistic
 * --probability`; each endpoint chain marks hairpin traffic and DNATs. Services appear in
 * the cluster's order: the first is the first rule. IPv4, TCP, ClusterIP only.
 */
export function kubeProxyIptablesScript(cluster: ClusterState, clusterCIDR: string): string {
  const slices = new Map(cluster.endpointSlices.map((s) => [s.serviceName, s]));
  const decl = [':KUBE-SERVICES - [0:0]', ':KUBE-MARK-MASQ - [0:0]', ':KUBE-POSTROUTING - [0:0]'];
  const rules = [
    '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
    '-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000',
    '-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN',
    '-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0',
    '-A KUBE-POSTROUTING -j MASQUERADE --random-fully',
  ];
  const services: string[] = [];
  for (const svc of cluster.services) {
    const { namespace, name } = svc.metadata;
    const eps = slices.get(name)?.endpoints ?? [];
    const target = slices.get(name)?.ports[0]?.port ?? 80;
    for (const sp of svc.ports) {
      const id = `${namespace}/${name}:${sp.name ?? ''}`;
      const chain = `KUBE-SVC-${hash(id, 16)}`;
      const vip = svc.clusterIPs[0]!;
      const proto = sp.protocol.toLowerCase();
      if (!eps.length) continue;
      decl.push(`:${chain} - [0:0]`);
      services.push(
        `-A KUBE-SERVICES -d ${vip}/32 -p ${proto} -m comment --comment "${id} cluster IP" -m ${proto} --dport ${sp.port} -j ${chain}`,
      );
      rules.push(
        `-A ${chain} ! -s ${clusterCIDR} -d ${vip}/32 -p ${proto} -m comment --comment "${id} cluster IP" -m ${proto} --dport ${sp.port} -j KUBE-MARK-MASQ`,
      );
      eps.forEach((ep, i) => {
        const sep = `KUBE-SEP-${hash(`${id}/${ep.address}`, 16)}`;
        decl.push(`:${sep} - [0:0]`);
        const left = eps.length - i;
        const pick = left > 1 ? ` -m statistic --mode random --probability ${(1 / left).toFixed(11)}` : '';
        rules.push(`-A ${chain} -m comment --comment "${id} -> ${ep.address}:${target}"${pick} -j ${sep}`);
        rules.push(`-A ${sep} -s ${ep.address}/32 -m comment --comment "${id}" -j KUBE-MARK-MASQ`);
        rules.push(
          `-A ${sep} -p ${proto} -m comment --comment "${id}" -m ${proto} -j DNAT --to-destination ${ep.address}:${target}`,
        );
      });
    }
  }
  return ['*nat', ...decl, ...services, ...rules, 'COMMIT', ''].join('\n');
}
