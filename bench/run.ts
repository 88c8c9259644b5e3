/**
 * The benchmark runner, on the built code: `npm run bench` compiles the benchmarks into
 * dist-bench/ and runs every one at full size, writing its result files (JSON, the figures
 * docs/benchmarks.md quotes, and a markdown table) into bench/results; `npm run bench:quick`
 * runs them small and once, in about two minutes, to check they work (CI runs it as a smoke
 * test and judges no time).
 *
 *   npm run build:bench && node dist-bench/bench/run.js [--quick] [--out DIR]
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { kernelTestsPossible } from '../test/support/netns.js';
import { benchIncremental, incrementalMarkdown, writeIncremental } from './incremental.js';
import { benchLatency, latencyMarkdown, writeLatency } from './latency.js';
import { repoPath } from './lib/paths.js';
import { benchMemory, memoryMarkdown, writeMemory } from './memory.js';
import { plotAll } from './plot.js';
import { benchSync, syncMarkdown, writeSync } from './sync.js';
import { benchRealPeer, realPeerMarkdown, writeRealPeer } from './real-peer.js';
import { realApiServerMissing } from '../test/support/kube-apiserver.js';

const { values } = parseArgs({
  options: { quick: { type: 'boolean', default: false }, out: { type: 'string' } },
});
const why = kernelTestsPossible();
if (why) {
  process.stderr.write(`bench: ${why.replace('kernel tests', 'benchmarks')}\n`);
  process.exit(1);
}
const quick = values.quick;
const out = values.out ?? repoPath('bench', 'results', ...(quick ? ['tmp'] : []));
await mkdir(out, { recursive: true });
const command = `npm run bench${quick ? ':quick' : ''}`;

const sync = quick
  ? await benchSync([100, 1000], 1, command)
  : await benchSync([1000, 10_000, 50_000], 3, command);
await writeSync(out, sync);
process.stdout.write(syncMarkdown(sync) + '\n');

// One endpoint change at a time, through each backend: the same changes, one run after the other.
for (const backend of ['netlink', 'nft']) {
  const r = quick
    ? await benchIncremental(100, 5, command, 150, backend)
    : await benchIncremental(10_000, 200, command, 150, backend);
  const dir = backend === 'netlink' ? out : join(out, 'nft');
  await mkdir(dir, { recursive: true });
  await writeIncremental(dir, r);
  process.stdout.write(incrementalMarkdown(r) + '\n');
}

const latency = quick
  ? await benchLatency([100], [100], 20, command)
  : await benchLatency([1000, 10_000, 50_000], [1000, 10_000], 500, command);
await writeLatency(out, latency);
process.stdout.write(latencyMarkdown(latency) + '\n');

// The operator's memory through the Kubernetes API path, and its change latency at 50,000.
const memory = quick ? await benchMemory(1000, 5, command) : await benchMemory(50_000, 100, command);
await writeMemory(out, memory);
process.stdout.write(memoryMarkdown(memory) + '\n');
// Real kube-proxy (1.20, iptables mode) beside nftproxy, fed by a real API server.
const noRealApi = realApiServerMissing();
if (noRealApi) {
  process.stderr.write(`bench: real-peer skipped: ${noRealApi}\n`);
} else {
  const peer = quick
    ? await benchRealPeer([100], 2, command)
    : await benchRealPeer([1000, 10_000], 3, command, 300_000);
  await writeRealPeer(out, peer);
  process.stdout.write(realPeerMarkdown(peer) + '\n');
}

if (!quick) {
  const big = await benchIncremental(50_000, 50, command);
  await mkdir(join(out, '50k'), { recursive: true });
  await writeIncremental(join(out, '50k'), big);
  process.stdout.write(incrementalMarkdown(big) + '\n');
}

// Plots next to the results; `npm run bench:plot` redraws docs/img from bench/results.
await plotAll(out, quick ? out : repoPath('docs', 'img'));
process.stdout.write(`results in ${out}\n`);
