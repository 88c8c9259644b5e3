/**
 * What a /metrics scrape costs with --endpoint-metrics: the kernel's counters of every
 * backends and nodeport-backends element read over netlink (what the operator does before
 * each scrape), for a cluster of N services loaded into a throwaway network namespace.
 * Prints the elements read and the median of the reads.
 *
 *   npm run build:bench && node dist-bench/bench/endpoint-metrics.js [services] [repetitions]
 */
import { performance } from 'node:perf_hooks';
import { execa } from 'execa';
import { compile } from '../src/proxy/compile.js';
import { parseProxyConfig } from '../src/proxy/config.js';
import { diffRulesets } from '../src/nft/diff.js';
import { renderTransaction } from '../src/nft/render.js';
import { NetlinkBackend } from '../src/nft/netlink/backend.js';
import { Maps, TABLE } from '../src/proxy/names.js';
import { Netns } from '../test/support/netns.js';
import { syntheticCluster } from '../test/support/synthetic.js';

const services = Number(process.argv[2] ?? 10_000);
const reps = Number(process.argv[3] ?? 5);
const r = compile(
  syntheticCluster(services),
  parseProxyConfig({ nodeName: 'n', clusterCIDRs: ['10.128.0.0/9'] }),
);
const script = renderTransaction(diffRulesets(undefined, r.ruleset).tx);

const ns = await Netns.create('bench');
try {
  await execa(ns.nftCommand[0]!, [...ns.nftCommand.slice(1), '-f', '-'], { input: script });
  const nft = new NetlinkBackend({ netns: ns.name });
  const times: number[] = [];
  let elements = 0;
  for (let i = 0; i < reps; i++) {
    const start = performance.now();
    elements = 0;
    for (const set of [Maps.backends, Maps.nodeportBackends])
      elements += (await nft.listElementCounters('ip', TABLE, set))?.size ?? 0;
    times.push(performance.now() - start);
  }
  nft.close();
  times.sort((a, b) => a - b);
  process.stdout.write(
    `| ${services} services | ${elements} counted elements | median read ${times[Math.floor(times.length / 2)]!.toFixed(0)} ms (${reps} reads) |\n`,
  );
} finally {
  await ns.delete();
}
