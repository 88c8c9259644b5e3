/**
 * What a /metrics scrape costs with --endpoint-metrics: the kernel's counters of every
 * backends and nodeport-backends element read over netlink (what the operator does before
 * each scrape), for a cluster of N services loaded into a throwaway network namespace, two
 * ways side by side: a dump of each map (before), and the elements asked for by key, 256 per
 * request (now). Prints the elements read and the median of the reads of each.
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
import { backendElements } from '../src/controller/reports.js';
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
  const nft = new NetlinkBackend({ netns: ns.name, keyedReadsFrom: 0 });
  const known = backendElements(r.builder);
  const median = async (keyed: boolean): Promise<[number, number]> => {
    const times: number[] = [];
    let elements = 0;
    for (let i = 0; i < reps; i++) {
      const start = performance.now();
      elements = 0;
      for (const set of [Maps.backends, Maps.nodeportBackends]) {
        const wanted = keyed ? known.get(`ip ${set}`) : undefined;
        elements += (await nft.listElementCounters('ip', TABLE, set, wanted))?.size ?? 0;
      }
      times.push(performance.now() - start);
    }
    times.sort((a, b) => a - b);
    return [times[Math.floor(times.length / 2)]!, elements];
  };
  const [dump, n1] = await median(false);
  const [keyed, n2] = await median(true);
  if (n1 !== n2) throw new Error(`the reads disagree: ${n1} elements dumped, ${n2} asked for`);
  nft.close();
  process.stdout.write(
    `| ${services} services | ${n1} counted elements | dump ${dump.toFixed(0)} ms | by key ${keyed.toFixed(0)} ms | ${(dump / keyed).toFixed(1)}x (${reps} reads each) |\n`,
  );
} finally {
  await ns.delete();
}
