/**
 * What the per-element counters on the backends maps cost (`endpointCounters`, read by
 * `nftproxy status`): full `nft -f` loads of the same cluster with and without them,
 * interleaved, each into a fresh table in a throwaway network namespace, and the kernel
 * memory the loaded table holds (Slab and Percpu of /proc/meminfo before and after; the
 * namespace is the only change in between, so treat small figures as noise). Prints a
 * markdown table.
 *
 *   node --import tsx bench/endpoint-counters.ts [services] [repetitions]
 */
import { readFile } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import { execa } from 'execa';
import { compile } from '../src/proxy/compile.js';
import { parseProxyConfig } from '../src/proxy/config.js';
import { diffRulesets } from '../src/nft/diff.js';
import { renderTransaction } from '../src/nft/render.js';
import { Netns } from '../test/support/netns.js';
import { syntheticCluster } from '../test/support/synthetic.js';

const services = Number(process.argv[2] ?? 10_000);
const reps = Number(process.argv[3] ?? 5);
const cluster = syntheticCluster(services);

const variants = [false, true].map((endpointCounters) => {
  const r = compile(
    cluster,
    parseProxyConfig({ nodeName: 'n', clusterCIDRs: ['10.128.0.0/9'], endpointCounters }),
  );
  const script = renderTransaction(diffRulesets(undefined, r.ruleset).tx);
  return {
    name: endpointCounters ? 'with counters (default)' : 'without counters',
    bytes: Buffer.byteLength(script),
    script,
    times: [] as number[],
    kib: [] as number[],
  };
});

/** Slab + Percpu kernel memory, KiB. */
async function kernelKiB(): Promise<number> {
  const text = await readFile('/proc/meminfo', 'utf8');
  const get = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0);
  return get('Slab') + get('Percpu');
}

for (let i = 0; i < reps; i++) {
  for (const v of variants) {
    const ns = await Netns.create('bench');
    try {
      // Namespaces are torn down asynchronously: let the last one's memory go first.
      await new Promise((r) => setTimeout(r, 3000));
      const before = await kernelKiB();
      const start = performance.now();
      await execa(ns.nftCommand[0]!, [...ns.nftCommand.slice(1), '-f', '-'], { input: v.script });
      v.times.push(performance.now() - start);
      await new Promise((r) => setTimeout(r, 1000));
      v.kib.push((await kernelKiB()) - before);
    } finally {
      await ns.delete();
    }
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const elements = variants[0]!.script.match(/ : /g)?.length ?? 0;
console.log(
  `Full load (nft -f into an empty namespace) of ${services} services (~${elements} map elements), ${reps} interleaved runs each:\n`,
);
console.log('| backends maps | script | median | min | max | kernel memory (median) |');
console.log('| --- | --- | --- | --- | --- | --- |');
for (const v of variants) {
  const f = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
  console.log(
    `| ${v.name} | ${(v.bytes / 1e6).toFixed(1)} MB | ${f(median(v.times))} | ${f(Math.min(...v.times))} | ${f(Math.max(...v.times))} | ${(median(v.kib) / 1024).toFixed(1)} MiB |`,
  );
}
