/**
 * Synthetic clusters of any size, for scale tests and benchmarks: services with 1-10
 * endpoints (5.5 on average), one port each, every tenth a NodePort while the default
 * NodePort range (30000-32767) lasts.
 */
import type { ClusterState, EndpointSlice, Service } from '../../src/k8s/types.js';

const meta = (name: string) => ({ namespace: 'default', name, labels: {}, annotations: {} });

/** A cluster of `count` services. */
export function syntheticCluster(count: number): ClusterState {
  const services: Service[] = [];
  const endpointSlices: EndpointSlice[] = [];
  let pod = 0;
  for (let i = 0; i < count; i++) {
    const name = `svc-${i}`;
    const nodePort = i % 10 === 5 && i < 27680 ? 30000 + (i - 5) / 10 : undefined;
    services.push({
      metadata: meta(name),
      type: nodePort ? 'NodePort' : 'ClusterIP',
      clusterIPs: [`10.${96 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`],
      headless: false,
      ports: [
        { name: 'http', protocol: 'TCP', port: 80, targetPort: 8080, ...(nodePort ? { nodePort } : {}) },
      ],
      externalIPs: [],
      loadBalancerIPs: [],
      externalTrafficPolicy: 'Cluster',
      internalTrafficPolicy: 'Cluster',
      sessionAffinity: 'None',
      sessionAffinityTimeoutSeconds: 10800,
      loadBalancerSourceRanges: [],
    });
    const endpoints = Array.from({ length: 1 + (i % 10) }, () => {
      pod++;
      return {
        address: `10.${128 + (pod >> 16)}.${(pod >> 8) & 255}.${pod & 255}`,
        conditions: { ready: true, serving: true, terminating: false },
      };
    });
    endpointSlices.push({
      metadata: meta(`${name}-1`),
      serviceName: name,
      addressType: 'IPv4',
      ports: [{ name: 'http', protocol: 'TCP', port: 8080 }],
      endpoints,
    });
  }
  return { services, endpointSlices, nodes: [] };
}
