/**
 * Full sync of a synthetic cluster (services with 1-10 endpoints, 5.5 on average) into an
 * empty node, five ways, interleaved, each into a fresh network namespace:
 *
 * - nftproxy: its full sync end to end (Syncer.sync: read the kernel, compile, plan, encode,
 *   commit) through the netlink backend, from a store already holding the cluster;
 * - nftproxyNft: the same through the nft backend (render, `nft -f`);
 * - floor: `nft -f` of the script nftproxy renders for the same cluster, alone;
 * - kubeProxy136: `nft -f` of the ruleset kube-proxy 1.36+ writes for it (a chain per service
 *   port with an inline numgen DNAT map, a hairpin set);
 * - kubeProxy: `nft -f` of the ruleset kube-proxy 1.33-1.35 writes (a chain and an anonymous
 *   numgen verdict map per service port, a chain per endpoint); bench/lib/kube-proxy.ts.
 *
 *   npm run build:bench && node dist-bench/bench/sync.js [--sizes 1000,10000] [--reps 5] [--out DIR]
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { execa } from 'execa';
import { Syncer } from '../src/controller/syncer.js';
import { ClusterStore } from '../src/k8s/store.js';
import { diffRulesets } from '../src/nft/diff.js';
import type { NftBackend } from '../src/nft/backend.js';
import { ExecBackend } from '../src/nft/exec.js';
import { NetlinkBackend } from '../src/nft/netlink/backend.js';
import { renderTransaction } from '../src/nft/render.js';
import { compile } from '../src/proxy/compile.js';
import { parseProxyConfig } from '../src/proxy/config.js';
import { Netns } from '../test/support/netns.js';
import { syntheticCluster } from '../test/support/synthetic.js';
import { kubeProxyNftScript } from './lib/kube-proxy.js';
import { machine, type Machine } from './lib/machine.js';
import { formatMs, type Summary, summarize } from './lib/stats.js';

const CLUSTER_CIDR = '10.128.0.0/9';
export const SHAPES = ['nftproxy', 'nftproxyNft', 'floor', 'kubeProxy136', 'kubeProxy'] as const;
export type Shape = (typeof SHAPES)[number];

export interface SyncSize {
  services: number;
  endpoints: number;
  /** Script sizes, bytes (kubeProxy136: 1.36+; kubeProxy: 1.33-1.35). */
  bytes: { floor: number; kubeProxy: number; kubeProxy136?: number };
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
    const kubeProxy = kubeProxyNftScript(cluster, CLUSTER_CIDR, '1.33-1.35');
    const kubeProxy136 = kubeProxyNftScript(cluster, CLUSTER_CIDR, '1.36+');
    const fullSync = async (backend: NftBackend) => {
      const syncer = new Syncer(store, config, backend);
      try {
        const start = performance.now();
        await syncer.sync({ full: true, dirty: new Set(), reasons: new Set(['start']), queuedAt: 0 });
        return performance.now() - start;
      } finally {
        backend.close?.();
      }
    };
    const runs: Record<Shape, (ns: Netns) => Promise<number>> = {
      nftproxy: (ns) => fullSync(new NetlinkBackend({ netns: ns.name })),
      nftproxyNft: (ns) => fullSync(new ExecBackend({ command: ns.nftCommand })),
      floor: (ns) => load(ns, floor),
      kubeProxy136: (ns) => load(ns, kubeProxy136),
      kubeProxy: (ns) => load(ns, kubeProxy),
    };
    const shapes = SHAPES.filter((s) => !s.startsWith('kubeProxy') || services <= kubeProxyUpTo);
    const times: Record<Shape, number[]> = {
      nftproxy: [],
      nftproxyNft: [],
      floor: [],
      kubeProxy136: [],
      kubeProxy: [],
    };
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
      bytes: {
        floor: Buffer.byteLength(floor),
        kubeProxy: Buffer.byteLength(kubeProxy),
        kubeProxy136: Buffer.byteLength(kubeProxy136),
      },
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
    '| services | endpoints | nftproxy, netlink | nftproxy, nft backend | floor: nft -f of its script | kube-proxy 1.36+ nft -f | kube-proxy 1.33-1.35 nft -f | 1.36+ / nftproxy | 1.33-1.35 / nftproxy | nft backend / netlink |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  const cell = (s?: Summary) =>
    s ? `${formatMs(s.median)} (${formatMs(s.min)}-${formatMs(s.max)})` : 'not run';
  const ratio = (a?: Summary, b?: Summary, digits = 1) =>
    a && b ? `${(a.median / b.median).toFixed(digits)}x` : '-';
  for (const s of r.sizes) {
    const t = s.times;
    lines.push(
      `| ${s.services} | ${s.endpoints} | ${cell(t.nftproxy)} | ${cell(t.nftproxyNft)} | ${cell(t.floor)} | ${cell(t.kubeProxy136)} | ${cell(t.kubeProxy)} | ${ratio(t.kubeProxy136, t.nftproxy)} | ${ratio(t.kubeProxy, t.nftproxy)} | ${ratio(t.nftproxyNft, t.nftproxy, 2)} |`,
    );
  }
  lines.push(
    '',
    'Scripts nft parses: ' +
      r.sizes
        .map(
          (s) =>
            `${s.services} services: nftproxy ${(s.bytes.floor / 1e6).toFixed(1)} MB, kube-proxy 1.36+ ${((s.bytes.kubeProxy136 ?? 0) / 1e6).toFixed(1)} MB, 1.33-1.35 ${(s.bytes.kubeProxy / 1e6).toFixed(1)} MB`,
        )
        .join('; ') +
      '.',
  );
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
    `node dist-bench/bench/sync.js --sizes ${values.sizes} --reps ${values.reps}`,
  );
  process.stdout.write(syncMarkdown(r));
  if (values.out) await writeSync(values.out, r);
}
