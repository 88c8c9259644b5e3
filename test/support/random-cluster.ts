/**
 * Random clusters for property tests (fast-check): services of every type, dual stack, TCP,
 * UDP and SCTP ports, EndpointSlices per family with endpoints in every condition.
 */
import fc from 'fast-check';
import type { ClusterState } from '../../src/k8s/types.js';
import { cluster, type EndpointSpec, node, type PortSpec, service, slice } from './cluster.js';

export const NODE_IP = '192.168.50.1';
export const NODE_IP6 = 'fd00:50::1';
export const PROTOCOLS = ['TCP', 'UDP', 'SCTP'] as const;

export interface GenPort {
  protocol: (typeof PROTOCOLS)[number];
  port: number;
  target: number;
}
export interface GenEndpoint {
  pod: number;
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
}
export interface GenSlice {
  v6: boolean;
  /** Which service ports (by index) the slice carries, and the target port for each. */
  ports: { index: number; target: number }[];
  endpoints: GenEndpoint[];
}
export interface GenService {
  type: 'ClusterIP' | 'NodePort' | 'LoadBalancer';
  dual: boolean;
  ports: GenPort[];
  external: boolean;
  slices: GenSlice[];
}

const arbEndpoint: fc.Arbitrary<GenEndpoint> = fc.record(
  {
    pod: fc.integer({ min: 1, max: 40 }),
    ready: fc.boolean(),
    serving: fc.boolean(),
    terminating: fc.boolean(),
  },
  { requiredKeys: ['pod'] },
);

const arbService: fc.Arbitrary<GenService> = fc
  .record({
    type: fc.constantFrom('ClusterIP' as const, 'NodePort' as const, 'LoadBalancer' as const),
    dual: fc.boolean(),
    ports: fc.uniqueArray(
      fc.record({
        protocol: fc.constantFrom(...PROTOCOLS),
        port: fc.integer({ min: 1, max: 200 }),
        target: fc.integer({ min: 1000, max: 1010 }),
      }),
      { minLength: 1, maxLength: 3, selector: (p) => `${p.protocol}/${p.port}` },
    ),
    external: fc.boolean(),
    sliceSeeds: fc.array(
      fc.record({
        v6: fc.boolean(),
        portMask: fc.array(fc.boolean(), { minLength: 3, maxLength: 3 }),
        targetShift: fc.integer({ min: 0, max: 1 }),
        endpoints: fc.array(arbEndpoint, { maxLength: 6 }),
      }),
      { maxLength: 3 },
    ),
  })
  .map(({ sliceSeeds, ...s }) => ({
    ...s,
    slices: sliceSeeds.map((seed) => ({
      v6: seed.v6,
      ports: s.ports.flatMap((p, index) =>
        seed.portMask[index] ? [{ index, target: p.target + seed.targetShift }] : [],
      ),
      endpoints: seed.endpoints,
    })),
  }));

export const arbCluster = fc.array(arbService, { minLength: 1, maxLength: 8 });

export const podIP = (n: number, v6: boolean) =>
  v6 ? `fd00:244::${n.toString(16)}` : `10.244.${Math.floor(n / 10)}.${(n % 10) + 10}`;
export const clusterIP = (i: number, v6: boolean) =>
  v6 ? `fd00:96::${(i + 1).toString(16)}` : `10.96.0.${i + 1}`;

export function build(gen: GenService[]): ClusterState {
  let nodePort = 30000;
  const objects = [node('node1', [NODE_IP, NODE_IP6])];
  gen.forEach((g, i) => {
    const name = `s${i}`;
    const ports: PortSpec[] = g.ports.map((p, j) => ({
      name: `p${j}`,
      port: p.port,
      protocol: p.protocol,
      ...(g.type !== 'ClusterIP' ? { nodePort: ++nodePort } : {}),
    }));
    objects.push(
      service(name, {
        type: g.type,
        clusterIPs: g.dual ? [clusterIP(i, false), clusterIP(i, true)] : [clusterIP(i, false)],
        ...(g.external ? { externalIPs: [`192.168.99.${i + 1}`] } : {}),
        ports,
      }) as never,
    );
    for (const s of g.slices) {
      const endpoints: EndpointSpec[] = s.endpoints.map(({ pod, ...e }) => ({ ip: podIP(pod, s.v6), ...e }));
      objects.push(
        slice(
          name,
          s.ports.map(({ index, target }) => ({
            name: `p${index}`,
            port: target,
            protocol: g.ports[index]!.protocol,
          })),
          endpoints,
          { addressType: s.v6 ? 'IPv6' : 'IPv4' },
        ) as never,
      );
    }
  });
  return cluster(...objects);
}
