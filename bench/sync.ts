/**
 * Full sync of a synthetic cluster (services with 1-10 endpoints, 5.5 on average) into an
 * empty node, three ways, interleaved, each into a fresh network namespace:
 *
 * - nftproxy: its full sync end to end (Syncer.sync: read the kernel, compile, diff, render,
 *   `nft -f`), from a store already holding the cluster;
 * - floor: `nft -f` of the script nftproxy rendered for the same cluster, alone;
 * - kube-proxy: `nft -f` of the ruleset kube-proxy's nftables mode writes for it
 *   (bench/lib/kube-proxy.ts: a chain and an anonymous numgen map per service, a chain per
 *   endpoint).
 *
 *   node --import tsx bench/sync.ts [--sizes 1000,10000] [--reps 5] [--out DIR]
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { execa } from 'execa';
import { Syncer } from '../src/controller/syncer.js';
import { ClusterStore } from '../src/k8s/store.js';
import { diffRulesets } from '../src/nft/diff.js';
import { ExecBackend } from '../src/nft/exec.js';
import { renderTransaction } from '../src/nft/render.js';
import { compile } from '../src/proxy/compile.js';
import { parseProxyConfig } from '../src/proxy/config.js';
import { Netns } from '../test/support/netns.js';
import { syntheticCluster } from '../test/support/synthetic.js';
import { kubeProxyNftScript } from './lib/kube-proxy.js';
import { machine, type Machine } from './lib/machine.js';
import { formatMs, type Summary, summarize } from './lib/stats.js';

const CLUSTER_CIDR = '10.128.0.0/9';
export const SHAPES = ['nftproxy', 'floor', 'kubeProxy'] as const;
export type Shape = (typeof SHAPES)[number];

export interface SyncSize {
  services: number;
  endpoints: number;
  /** Script sizes, bytes. */
  bytes: { floor: number; kubeProxy: number };
  /** kube-proxy's shape is left out above `kubeProxyUpTo` services (it takes minutes). */
  times: Partial<Record<Shape, Summary>>;
}

export interface SyncResults {
  benchmark: 'sync';
  command: string;
  machine: Machine;
  reps: number;
  sizes: SyncSize[];
}

/** Runs `script` with `nft -f -` in `ns`; its wall time, ms. */
async function load(ns: Netns, script: string): Promise<number> {
  const start = performance.now();
  await execa('ip', ['netns', 'exec', ns.name, 'nft', '-f', '-'], { input: script });
  return performance.now() - start;
}

/** One measurement in a namespace of its own, deleted afterwards. */
async function inFreshNamespace(run: (ns: Netns) => Promise<number>): Promise<number> {
  const ns = await Netns.create('bench');
  try {
    return await run(ns);
  } finally {
    await ns.delete();
  }
}

/**
 * Measures each size `reps` times per shape. kube-proxy's shape takes about two minutes per
 * load at 10,000 services on a 2-CPU machine; above `kubeProxyUpTo` services it is not run.
 */
export async function benchSync(
  sizes: number[],
  reps: number,
  command: string,
  kubeProxyUpTo = 10_000,
): Promise<SyncResults> {
  const config = parseProxyConfig({ nodeName: 'n', clusterCIDRs: [CLUSTER_CIDR] });
  const out: SyncSize[] = [];
  for (const services of sizes) {
    const cluster = syntheticCluster(services);
    const store = new ClusterStore('n');
    for (const s of cluster.services) store.upsert({ kind: 'Service', object: s });
    for (const s of cluster.endpointSlices) store.upsert({ kind: 'EndpointSlice', object: s });
    const floor = renderTransaction(diffRulesets(undefined, compile(cluster, config).ruleset).tx);
    const kubeProxy = kubeProxyNftScript(cluster, CLUSTER_CIDR);
    const runs: Record<Shape, (ns: Netns) => Promise<number>> = {
      nftproxy: async (ns) => {
        const syncer = new Syncer(store, config, new ExecBackend({ command: ns.nftCommand }));
        const start = performance.now();
        await syncer.sync({ full: true, dirty: new Set(), reasons: new Set(['start']), queuedAt: 0 });
        return performance.now() - start;
      },
      floor: (ns) => load(ns, floor),
      kubeProxy: (ns) => load(ns, kubeProxy),
    };
    const shapes = SHAPES.filter((s) => s !== 'kubeProxy' || services <= kubeProxyUpTo);
    const times: Record<Shape, number[]> = { nftproxy: [], floor: [], kubeProxy: [] };
    for (let r = 0; r < reps; r++) {
      // Rotate the order, so that no shape always follows another's namespace teardown.
      for (let k = 0; k < shapes.length; k++) {
        const shape = shapes[(r + k) % shapes.length]!;
        times[shape].push(await inFreshNamespace(runs[shape]));
      }
    }
    out.push({
      services,
      endpoints: cluster.endpointSlices.reduce((n, s) => n + s.endpoints.length, 0),
      bytes: { floor: Buffer.byteLength(floor), kubeProxy: Buffer.byteLength(kubeProxy) },
      times: Object.fromEntries(shapes.map((shape) => [shape, summarize(times[shape])])),
    });
  }
  return { benchmark: 'sync', command, machine: await machine(), reps, sizes: out };
}

/** The results as a markdown table, with the ratios the targets are about. */
export function syncMarkdown(r: SyncResults): string {
  const lines = [
    `<!-- ${r.command} ; ${r.machine.date}, kernel ${r.machine.kernel}, nft ${r.machine.nft}, Node ${r.machine.node}, ${r.machine.cpus} CPUs -->`,
    `Full sync into an empty node, ${r.reps} interleaved runs per shape (median, min-max):`,
    '',
    '| services | endpoints | nftproxy end to end | floor: nft -f of its script | kube-proxy-shaped nft -f | kube-proxy / nftproxy | nftproxy / floor | scripts (floor, kube-proxy) |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  const cell = (s?: Summary) =>
    s ? `${formatMs(s.median)} (${formatMs(s.min)}-${formatMs(s.max)})` : 'not run';
  const ratio = (a?: Summary, b?: Summary, digits = 1) =>
    a && b ? `${(a.median / b.median).toFixed(digits)}x` : '-';
  for (const s of r.sizes) {
    const t = s.times;
    lines.push(
      `| ${s.services} | ${s.endpoints} | ${cell(t.nftproxy)} | ${cell(t.floor)} | ${cell(t.kubeProxy)} | ${ratio(t.kubeProxy, t.nftproxy)} | ${ratio(t.nftproxy, t.floor, 2)} | ${(s.bytes.floor / 1e6).toFixed(1)} MB, ${(s.bytes.kubeProxy / 1e6).toFixed(1)} MB |`,
    );
  }
  return lines.join('\n') + '\n';
}

/** Writes `sync.json` and `sync.md` into `dir`. */
export async function writeSync(dir: string, r: SyncResults): Promise<void> {
  await writeFile(join(dir, 'sync.json'), JSON.stringify(r, null, 2) + '\n');
  await writeFile(join(dir, 'sync.md'), syncMarkdown(r));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    options: {
      sizes: { type: 'string', default: '1000,10000' },
      reps: { type: 'string', default: '5' },
      out: { type: 'string' },
    },
  });
  const r = await benchSync(
    values.sizes.split(',').map(Number),
    Number(values.reps),
    `node --import tsx bench/sync.ts --sizes ${values.sizes} --reps ${values.reps}`,
  );
  process.stdout.write(syncMarkdown(r));
  if (values.out) await writeSync(values.out, r);
}
