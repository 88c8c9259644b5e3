/**
 * The benchmark runner: `npm run bench` runs every benchmark at full size and writes its
 * result files (JSON, the figures docs/benchmarks.md quotes, and a markdown table) into
 * bench/results; `npm run bench:quick` runs them small and once, in well under two minutes,
 * to check they work (CI runs it as a smoke test and judges no time).
 *
 *   node --import tsx bench/run.ts [--quick] [--out DIR]
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { kernelTestsPossible } from '../test/support/netns.js';
import { benchIncremental, incrementalMarkdown, writeIncremental } from './incremental.js';
import { benchLatency, latencyMarkdown, writeLatency } from './latency.js';
import { plotAll } from './plot.js';
import { benchSync, syncMarkdown, writeSync } from './sync.js';

const { values } = parseArgs({
  options: { quick: { type: 'boolean', default: false }, out: { type: 'string' } },
});
const why = kernelTestsPossible();
if (why) {
  process.stderr.write(`bench: ${why.replace('kernel tests', 'benchmarks')}\n`);
  process.exit(1);
}
const out = values.out ?? fileURLToPath(new URL(values.quick ? 'results/tmp' : 'results', import.meta.url));
await mkdir(out, { recursive: true });
const command = `npm run bench${values.quick ? ':quick' : ''}`;

const sync = values.quick
  ? await benchSync([100, 1000], 1, command)
  : await benchSync([1000, 10_000, 50_000], 5, command);
await writeSync(out, sync);
process.stdout.write(syncMarkdown(sync) + '\n');

const incremental = values.quick
  ? await benchIncremental(100, 5, command)
  : await benchIncremental(10_000, 200, command);
await writeIncremental(out, incremental);
process.stdout.write(incrementalMarkdown(incremental) + '\n');

const latency = values.quick
  ? await benchLatency([100], [100], 20, command)
  : await benchLatency([1000, 10_000, 50_000], [1000, 10_000], 500, command);
await writeLatency(out, latency);
process.stdout.write(latencyMarkdown(latency) + '\n');

if (!values.quick) {
  // The operator's memory at 50,000 services (and its change latency there).
  const big = await benchIncremental(50_000, 50, command);
  await mkdir(join(out, '50k'), { recursive: true });
  await writeIncremental(join(out, '50k'), big);
  process.stdout.write(incrementalMarkdown(big) + '\n');
}

// Plots next to the results; `npm run bench:plot` redraws docs/img from bench/results.
await plotAll(out, values.quick ? out : fileURLToPath(new URL('../docs/img', import.meta.url)));
process.stdout.write(`results in ${out}\n`);
