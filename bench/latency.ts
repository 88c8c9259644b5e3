/**
 * New-connection latency against the number of services: a client pod connects (TCP) to the
 * first and to the last of N services, and straight to the pod behind them (no NAT), through a
 * node holding the rules for all N:
 *
 * - nftproxy: the ruleset it compiles for the cluster (one verdict-map lookup, whatever N);
 * - iptables: the nat table kube-proxy's iptables mode writes for the same cluster, loaded
 *   with iptables-legacy-restore (KUBE-SERVICES matched rule by rule, the last service last).
 *
 * The first and last services' endpoint is the one real pod; the others point at addresses
 * that exist nowhere. The three targets are measured in turn, connection by connection.
 *
 *   node --import tsx bench/latency.ts [--sizes 1000,10000,50000] [--iptables 10000] [--count 500] [--out DIR]
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { execa } from 'execa';
import type { ClusterState } from '../src/k8s/types.js';
import { diffRulesets } from '../src/nft/diff.js';
import { renderTransaction } from '../src/nft/render.js';
import { compile } from '../src/proxy/compile.js';
import { parseProxyConfig } from '../src/proxy/config.js';
import { createTopology, startEchoServer, type Topology } from '../test/support/netns.js';
import { syntheticCluster } from '../test/support/synthetic.js';
import { kubeProxyIptablesScript } from './lib/kube-proxy.js';
import { machine, type Machine } from './lib/machine.js';
import { type Summary, summarize } from './lib/stats.js';

const CLUSTER_CIDR = '10.244.0.0/16';
/** The client, next to this file: compiled (dist-bench/) or the source, run through tsx. */
const SELF = fileURLToPath(import.meta.url);
const CLIENT = fileURLToPath(new URL(`lib/connect.${SELF.endsWith('.ts') ? 'ts' : 'js'}`, import.meta.url));
const CLIENT_FLAGS = SELF.endsWith('.ts') ? ['--import', 'tsx'] : [];

export type LatencyShape = 'nftproxy' | 'iptables';
export type LatencyTarget = 'first' | 'last' | 'direct';

export interface LatencyRow {
  shape: LatencyShape;
  services: number;
  target: LatencyTarget;
  /** TCP connect time, ms. */
  latency: Summary;
}

export interface LatencyResults {
  benchmark: 'latency';
  command: string;
  machine: Machine;
  connections: number;
  rows: LatencyRow[];
}

/** A synthetic cluster whose first and last services lead to `podIP`:8080. */
function clusterTo(services: number, podIP: string): ClusterState {
  const c = syntheticCluster(services);
  for (const i of [0, services - 1]) {
    const s = c.endpointSlices[i]!;
    c.endpointSlices[i] = {
      ...s,
      endpoints: [{ address: podIP, conditions: { ready: true, serving: true, terminating: false } }],
    };
  }
  return c;
}

async function measure(
  shape: LatencyShape,
  services: number,
  connections: number,
  topo: Topology,
): Promise<LatencyRow[]> {
  const pod = topo.pods[0]!;
  const cluster = clusterTo(services, pod.ip);
  if (shape === 'nftproxy') {
    const config = parseProxyConfig({ nodeName: 'node1', clusterCIDRs: [CLUSTER_CIDR] });
    const script = renderTransaction(diffRulesets(undefined, compile(cluster, config).ruleset).tx);
    await execa('ip', ['netns', 'exec', topo.node.name, 'nft', '-f', '-'], { input: script });
  } else {
    await execa('ip', ['netns', 'exec', topo.node.name, 'iptables-legacy-restore'], {
      input: kubeProxyIptablesScript(cluster, CLUSTER_CIDR),
    });
  }
  const vip = (i: number) => cluster.services[i]!.clusterIPs[0]!;
  const targets: Record<LatencyTarget, string> = {
    first: `${vip(0)}:80`,
    last: `${vip(services - 1)}:80`,
    direct: `${pod.ip}:8080`,
  };
  const { stdout } = await execa('ip', [
    'netns',
    'exec',
    topo.client.ns.name,
    process.execPath,
    ...CLIENT_FLAGS,
    CLIENT,
    '--count',
    String(connections),
    ...Object.values(targets).flatMap((t) => ['--target', t]),
  ]);
  const times = JSON.parse(stdout) as Record<string, number[]>;
  return (Object.keys(targets) as LatencyTarget[]).map((target) => ({
    shape,
    services,
    target,
    latency: summarize(times[targets[target]]!),
  }));
}

export async function benchLatency(
  sizes: number[],
  iptablesSizes: number[],
  connections: number,
  command: string,
): Promise<LatencyResults> {
  const rows: LatencyRow[] = [];
  const runs: [LatencyShape, number][] = [
    ...sizes.map((n): [LatencyShape, number] => ['nftproxy', n]),
    ...iptablesSizes.map((n): [LatencyShape, number] => ['iptables', n]),
  ];
  for (const [shape, services] of runs) {
    const topo = await createTopology(1);
    try {
      const stop = await startEchoServer(topo.pods[0]!, { tcp: [8080] });
      try {
        rows.push(...(await measure(shape, services, connections, topo)));
      } finally {
        await stop();
      }
    } finally {
      await topo.destroy();
    }
  }
  return { benchmark: 'latency', command, machine: await machine(), connections, rows };
}

/** The results as markdown: median and p99 per target, and the ratios the targets are about. */
export function latencyMarkdown(r: LatencyResults): string {
  const us = (ms: number) => `${Math.round(ms * 1000)} µs`;
  const get = (shape: LatencyShape, n: number, t: LatencyTarget) =>
    r.rows.find((x) => x.shape === shape && x.services === n && x.target === t)?.latency;
  const lines = [
    `<!-- ${r.command} ; ${r.machine.date}, kernel ${r.machine.kernel}, nft ${r.machine.nft}, Node ${r.machine.node}, ${r.machine.cpus} CPUs -->`,
    `TCP connect time from a client pod through the node, ${r.connections} connections per target, in turn (median, p99):`,
    '',
    '| rules | services | first service | last service | straight to the pod | last / first | last - first |',
    '| --- | --- | --- | --- | --- | --- | --- |',
  ];
  const seen = new Set<string>();
  for (const row of r.rows) {
    const key = `${row.shape}/${row.services}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const [f, l, d] = (['first', 'last', 'direct'] as const).map((t) => get(row.shape, row.services, t)!);
    const label = row.shape === 'nftproxy' ? 'nftproxy' : 'kube-proxy iptables (legacy)';
    lines.push(
      `| ${label} | ${row.services} | ${us(f!.median)}, ${us(f!.p99)} | ${us(l!.median)}, ${us(l!.p99)} | ${us(d!.median)}, ${us(d!.p99)} | ${(l!.median / f!.median).toFixed(2)}x | ${us(l!.median - f!.median)} |`,
    );
  }
  return lines.join('\n') + '\n';
}

/** Writes `latency.json` and `latency.md` into `dir`. */
export async function writeLatency(dir: string, r: LatencyResults): Promise<void> {
  await writeFile(join(dir, 'latency.json'), JSON.stringify(r, null, 2) + '\n');
  await writeFile(join(dir, 'latency.md'), latencyMarkdown(r));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    options: {
      sizes: { type: 'string', default: '1000,10000,50000' },
      iptables: { type: 'string', default: '10000' },
      count: { type: 'string', default: '500' },
      out: { type: 'string' },
    },
  });
  const list = (s: string) => (s ? s.split(',').map(Number) : []);
  const r = await benchLatency(
    list(values.sizes),
    list(values.iptables),
    Number(values.count),
    `node dist-bench/bench/latency.js --sizes ${values.sizes} --iptables ${values.iptables} --count ${values.count}`,
  );
  process.stdout.write(latencyMarkdown(r));
  if (values.out) await writeLatency(values.out, r);
}
