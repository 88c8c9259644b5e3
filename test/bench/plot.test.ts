/** The result files' SVG plots: drawn from made-up results, skipped without them, reproducible. */
import assert from 'node:assert/strict';
import { access, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IncrementalFile, LatencyFile, SyncFile } from '../../bench/plot.js';
import { incrementalSpec, logTicks, plotAll } from '../../bench/plot.js';
import { summarize } from '../../bench/lib/stats.js';

const machine = { date: '2026-01-02', kernel: '6.1.0-test', nft: '1.0.6', node: '20.20.2', cpus: 2 };
const ms = (median: number) => summarize([median * 0.8, median, median * 1.3]);

const sync: SyncFile = {
  benchmark: 'sync',
  command: 'npm run bench',
  machine,
  reps: 3,
  sizes: [1000, 10_000, 50_000].map((services) => ({
    services,
    endpoints: services * 5.5,
    bytes: { floor: services * 550, kubeProxy: services * 1650 },
    times: {
      nftproxy: ms(services * 0.35),
      floor: ms(services * 0.21),
      ...(services <= 10_000
        ? { kubeProxy: ms(services * services * 0.001), kubeProxy136: ms(services * services * 0.0004) }
        : {}),
    },
  })),
};

const latency: LatencyFile = {
  benchmark: 'latency',
  command: 'npm run bench',
  machine,
  connections: 200,
  rows: [100, 1000, 10_000].flatMap((services) => [
    { shape: 'nftproxy' as const, services, target: 'last' as const, latency: ms(0.09) },
    { shape: 'nftproxy' as const, services, target: 'first' as const, latency: ms(0.085) },
    { shape: 'iptables' as const, services, target: 'last' as const, latency: ms(0.05 + services * 2e-5) },
    { shape: 'iptables' as const, services, target: 'first' as const, latency: ms(0.06) },
    { shape: 'nftproxy' as const, services, target: 'direct' as const, latency: ms(0.07) },
  ]),
};

const samples = Array.from({ length: 60 }, (_, i) => 8 + ((i * 37) % 23) + (i === 59 ? 40 : 0));
const incremental: IncrementalFile = {
  benchmark: 'incremental',
  command: 'npm run bench',
  machine,
  services: 10_000,
  endpoints: 55_000,
  changes: samples.length,
  toKernel: summarize(samples),
  samples,
};

const write = (dir: string, name: string, r: unknown) =>
  writeFile(join(dir, name), JSON.stringify(r, null, 2) + '\n');
const exists = (path: string) =>
  access(path).then(
    () => true,
    () => false,
  );

describe('bench/plot.ts: SVG plots of the result files', function () {
  let tmp: string;
  let results: string;
  before(async function () {
    tmp = await mkdtemp(join(tmpdir(), 'nftproxy-plot-'));
    results = join(tmp, 'results');
    await mkdir(results);
    await write(results, 'sync.json', sync);
    await write(results, 'latency.json', latency);
    await write(results, 'incremental.json', incremental);
  });
  after(async function () {
    await rm(tmp, { recursive: true, force: true });
  });

  it('draws each plot with its titles, labels and machine, and the same bytes every time', async function () {
    const lines: string[] = [];
    const written = await plotAll(results, join(tmp, 'a'), (l) => lines.push(l));
    assert.deepEqual(
      written,
      ['sync.svg', 'latency.svg', 'incremental.svg'].map((f) => join(tmp, 'a', f)),
    );
    assert.equal(lines.length, 3);
    const expected: Record<string, string[]> = {
      'sync.svg': [
        'services (log scale)',
        'full-sync time, s (log scale)',
        'nftproxy end to end (netlink)',
        'floor: nft -f of its script',
        'kube-proxy 1.36+ nft -f',
        'kube-proxy 1.33-1.35 nft -f',
        'not run at 50,000 services',
        '5.5 endpoints per service',
      ],
      'latency.svg': [
        'services (log scale)',
        'connect time, µs',
        'nftproxy, last service',
        'iptables-legacy, first service',
        'direct to the pod (no NAT)',
        '200 connections',
      ],
      'incremental.svg': ['event to kernel, ms', 'changes', 'median ', 'p99 '],
    };
    const again = await plotAll(results, join(tmp, 'b'), () => {});
    assert.equal(again.length, 3);
    for (const [file, texts] of Object.entries(expected)) {
      const svg = await readFile(join(tmp, 'a', file), 'utf8');
      assert.ok(svg.startsWith('<svg'), `${file} is an SVG`);
      for (const text of [...texts, 'npm run bench on 2 CPUs, Linux 6.1.0-test, nft 1.0.6'])
        assert.ok(svg.includes(text), `${file} says ${JSON.stringify(text)}`);
      assert.doesNotMatch(svg, /NaN|Infinity/, `${file} has only finite coordinates`);
      assert.equal(svg, await readFile(join(tmp, 'b', file), 'utf8'), `${file} is reproducible`);
    }
  });

  it('skips a plot whose result file is missing', async function () {
    const only = join(tmp, 'only-sync');
    await mkdir(only);
    await write(only, 'sync.json', sync);
    const lines: string[] = [];
    const out = join(tmp, 'c');
    assert.deepEqual(await plotAll(only, out, (l) => lines.push(l)), [join(out, 'sync.svg')]);
    assert.equal(await exists(join(out, 'latency.svg')), false);
    assert.equal(await exists(join(out, 'incremental.svg')), false);
    assert.deepEqual(
      lines.map((l) => l.split(' ')[0]),
      ['wrote', 'skipped', 'skipped'],
    );
    const none = join(tmp, 'none');
    assert.deepEqual(await plotAll(join(tmp, 'empty'), none, () => {}), []);
    assert.equal(await exists(none), false, 'no output directory made for nothing');
  });

  it('refuses a result file of another benchmark', async function () {
    const wrong = join(tmp, 'wrong');
    await mkdir(wrong);
    await write(wrong, 'sync.json', { ...latency });
    await assert.rejects(
      plotAll(wrong, join(tmp, 'd'), () => {}),
      /benchmark is "latency", not 'sync'/,
    );
  });

  it('puts a long command on a line of its own, above the machine', function () {
    const command = 'node --import tsx bench/incremental.ts --services 10000 --changes 200';
    const spec = incrementalSpec({ ...incremental, command });
    const title = spec.title;
    assert.ok(typeof title === 'object' && !Array.isArray(title));
    assert.deepEqual(title.subtitle?.slice(-2), [command, 'on 2 CPUs, Linux 6.1.0-test, nft 1.0.6']);
  });

  it('puts log-axis ticks at 1, 2, 5 times a power of ten', function () {
    assert.deepEqual(logTicks(0.19, 125), [0.2, 0.5, 1, 2, 5, 10, 20, 50, 100]);
    assert.deepEqual(logTicks(0.25, 0.45), [0.3, 0.4]);
    assert.deepEqual(logTicks(3.1, 3.9), []);
  });
});
