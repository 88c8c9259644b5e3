/**
 * SVG plots of the benchmark result files, drawn with Vega-Lite and rendered headless by Vega
 * (no browser, no canvas: text widths are estimated, so the output depends on the input alone
 * and the same result file always gives the same bytes).
 *
 * - `sync.json` → `sync.svg`: full-sync time against the number of services, per shape;
 * - `latency.json` → `latency.svg`: median TCP connect time against the number of services;
 * - `incremental.json` → `incremental.svg`: the spread of event-to-kernel times.
 *
 * A plot is drawn only when its result file is there; the others are skipped.
 *
 *   node --import tsx bench/plot.ts [--in bench/results] [--out docs/img]
 */
import { access, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { repoPath } from './lib/paths.js';
import { parseArgs } from 'node:util';
import * as vega from 'vega';
import * as vegaLite from 'vega-lite';
import type { TopLevelSpec } from 'vega-lite';
import type { Summary } from './lib/stats.js';

/** Where a benchmark ran (as bench/lib/machine.ts records it). */
export interface PlotMachine {
  date: string;
  kernel: string;
  nft: string;
  node: string;
  cpus: number;
}

/** `sync.json`: times in milliseconds. */
export interface SyncFile {
  benchmark: 'sync';
  command: string;
  machine: PlotMachine;
  reps: number;
  sizes: {
    services: number;
    endpoints: number;
    bytes: { floor: number; kubeProxy: number; kubeProxy136?: number };
    times: {
      nftproxy?: Summary;
      nftproxyNft?: Summary;
      floor?: Summary;
      kubeProxy136?: Summary;
      kubeProxy?: Summary;
    };
  }[];
}

/** `latency.json`: TCP connect times in milliseconds. */
export interface LatencyFile {
  benchmark: 'latency';
  command: string;
  machine: PlotMachine;
  connections: number;
  rows: {
    shape: 'nftproxy' | 'iptables';
    services: number;
    target: 'first' | 'last' | 'direct';
    latency: Summary;
  }[];
}

/** `incremental.json`: milliseconds from an EndpointSlice event to its nft transaction done. */
export interface IncrementalFile {
  benchmark: 'incremental';
  command: string;
  machine: PlotMachine;
  services: number;
  endpoints: number;
  changes: number;
  toKernel: Summary;
  /** One per change. */
  samples: number[];
}

/** One layer of a layered spec. */
type LayerItem = Extract<TopLevelSpec, { layer: unknown }>['layer'][number];

const WIDTH = 560;
const HEIGHT = 320;

const SYNC_SHAPES = [
  ['nftproxy', 'nftproxy end to end (netlink)'],
  ['nftproxyNft', 'nftproxy end to end (nft backend)'],
  ['floor', 'floor: nft -f of its script'],
  ['kubeProxy136', 'kube-proxy 1.36+ nft -f'],
  ['kubeProxy', 'kube-proxy 1.33-1.35 nft -f'],
] as const;

const LATENCY_SHAPES = { nftproxy: 'nftproxy', iptables: 'iptables-legacy' } as const;
const LATENCY_TARGETS = { last: 'last service', first: 'first service' } as const;
const DIRECT = 'direct to the pod (no NAT)';

/**
 * Vega measures text without a canvas at 0.8 em a character, about a third more than
 * sans-serif takes: lines longer than this widen the image past the plot.
 */
const LINE_CHARS = Math.floor(WIDTH / (0.8 * 11));

/**
 * `npm run bench on 2 CPUs, Linux 6.1.0, nft 1.0.6`: one line, or the command and the
 * machine on two where one would be too long.
 */
function caption(r: { command: string; machine: PlotMachine }): string[] {
  const m = r.machine;
  const where = `${m.cpus} CPUs, Linux ${m.kernel}, nft ${m.nft}`;
  const line = `${r.command} on ${where}`;
  return line.length <= LINE_CHARS ? [line] : [r.command, `on ${where}`];
}

/**
 * Tick values for a log axis over [lo, hi]: 1, 2, 5, 10, 20, 50 … inside it, or every digit
 * times a power of ten where that range is too short for two of them; none (let Vega choose)
 * where even that gives fewer than two.
 */
export function logTicks(lo: number, hi: number): number[] {
  if (!(lo > 0) || !(hi >= lo)) return [];
  const inside = (mantissas: number[]) => {
    const ticks: number[] = [];
    for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++)
      for (const m of mantissas) {
        const v = Number((m * 10 ** e).toPrecision(1));
        if (v >= lo && v <= hi) ticks.push(v);
      }
    return ticks;
  };
  for (const mantissas of [
    [1, 2, 5],
    [1, 2, 3, 4, 5, 6, 7, 8, 9],
  ]) {
    const ticks = inside(mantissas);
    if (ticks.length >= 2) return ticks;
  }
  return [];
}

const sortedUnique = (xs: number[]): number[] => [...new Set(xs)].sort((a, b) => a - b);

/** Common look: fixed size, white background, no interaction. */
const config = {
  font: 'sans-serif',
  background: 'white',
  view: { stroke: '#ddd' },
  title: { anchor: 'start', fontSize: 14, subtitleFontSize: 11, subtitleColor: '#555' },
  axis: { labelFontSize: 11, titleFontSize: 12, grid: true, gridColor: '#eee' },
  legend: { labelFontSize: 11, titleFontSize: 11, orient: 'bottom', direction: 'vertical', labelLimit: 0 },
} as const;

export function syncSpec(r: SyncFile): TopLevelSpec {
  const values = r.sizes.flatMap((size) =>
    SYNC_SHAPES.flatMap(([key, label]) => {
      const t = size.times[key];
      return t
        ? [
            {
              services: size.services,
              shape: label,
              median: t.median / 1e3,
              min: t.min / 1e3,
              max: t.max / 1e3,
            },
          ]
        : [];
    }),
  );
  const xs = sortedUnique(values.map((v) => v.services));
  const ys = values.flatMap((v) => [v.min, v.max]);
  const ticks = logTicks(Math.min(...ys), Math.max(...ys));
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  const perService = +(
    sum(r.sizes.map((s) => s.endpoints)) / Math.max(1, sum(r.sizes.map((s) => s.services)))
  ).toFixed(1);
  const notRun = SYNC_SHAPES.flatMap(([key, label]) => {
    const missing = r.sizes
      .filter((size) => !size.times[key])
      .map((size) => size.services.toLocaleString('en-US'));
    return missing.length ? [`${label}: not run at ${missing.join(', ')} services`] : [];
  });
  const x = {
    field: 'services',
    type: 'quantitative',
    title: 'services (log scale)',
    scale: { type: 'log', nice: false, padding: 20 },
    axis: { values: xs, format: ',d', grid: false },
  } as const;
  const color = {
    field: 'shape',
    type: 'nominal',
    title: null,
    scale: { domain: SYNC_SHAPES.map(([, label]) => label) },
  } as const;
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    width: WIDTH,
    height: HEIGHT,
    title: {
      text: 'Full sync of a cluster into an empty node',
      subtitle: [
        `median of ${r.reps} runs, bars: min to max; ${perService} endpoints per service`,
        ...notRun,
        ...caption(r),
      ],
    },
    data: { values },
    encoding: { x, color },
    layer: [
      {
        mark: { type: 'rule', strokeWidth: 1.5 },
        encoding: { y: { field: 'min', type: 'quantitative' }, y2: { field: 'max' } },
      },
      {
        mark: { type: 'line', point: { size: 40, filled: true } },
        encoding: {
          y: {
            field: 'median',
            type: 'quantitative',
            title: 'full-sync time, s (log scale)',
            scale: { type: 'log', nice: false, padding: 12 },
            axis: {
              ...(ticks.length ? { values: ticks } : {}),
              format: '~g',
            },
          },
        },
      },
    ],
    config,
  };
}

export function latencySeries(rows: LatencyFile['rows']): string[] {
  const directShapes = new Set(rows.filter((r) => r.target === 'direct').map((r) => r.shape));
  const label = (row: LatencyFile['rows'][number]): string =>
    row.target === 'direct'
      ? directShapes.size > 1
        ? `${DIRECT}, ${LATENCY_SHAPES[row.shape]} run`
        : DIRECT
      : `${LATENCY_SHAPES[row.shape]}, ${LATENCY_TARGETS[row.target]}`;
  return rows.map(label);
}

export function latencySpec(r: LatencyFile): TopLevelSpec {
  const labels = latencySeries(r.rows);
  const values = r.rows.map((row, i) => ({
    services: row.services,
    series: labels[i]!,
    median: row.latency.median * 1e3,
    min: row.latency.min * 1e3,
    p99: row.latency.p99 * 1e3,
  }));
  // Legend order: the proxies' last service, their first, then the baseline.
  const rank = (s: string) =>
    (s.startsWith(DIRECT) ? 20 : s.endsWith(LATENCY_TARGETS.first) ? 10 : 0) +
    (s.startsWith(LATENCY_SHAPES.iptables) ? 1 : 0);
  const domain = [...new Set(labels)].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  const xs = sortedUnique(values.map((v) => v.services));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    width: WIDTH,
    height: HEIGHT,
    title: {
      text: 'Connect latency through the service address',
      subtitle: [`median TCP connect time of ${r.connections} connections per target`, ...caption(r)],
    },
    data: { values },
    encoding: {
      x: {
        field: 'services',
        type: 'quantitative',
        title: 'services (log scale)',
        scale: { type: 'log', nice: false, padding: 20 },
        axis: { values: xs, format: ',d', grid: false },
      },
      color: {
        field: 'series',
        type: 'nominal',
        title: null,
        scale: { domain },
        legend: { symbolOpacity: 1 },
      },
    },
    layer: [
      // No min-p99 bars: a few slow handshakes (p99 up to 10x the median) would flatten the
      // medians, which differ by tens of µs; latency.md has the p99s.
      {
        mark: { type: 'line', point: { size: 40, filled: true } },
        encoding: {
          y: { field: 'median', type: 'quantitative', title: 'connect time, µs', scale: { zero: true } },
        },
      },
    ],
    config,
  };
}

export function incrementalSpec(r: IncrementalFile): TopLevelSpec {
  const t = r.toKernel;
  const top = Math.max(...r.samples, t.p99);
  // Each rule's label on a line of its own, to the left of rules in the right third (so it
  // stays inside the plot), haloed in white where it crosses the bars.
  const marks = [
    { stat: `median ${t.median.toFixed(1)} ms`, ms: t.median, px: 4 },
    { stat: `p99 ${t.p99.toFixed(1)} ms`, ms: t.p99, px: 19 },
  ].map((m) => ({ ...m, side: m.ms > top * 0.7 ? 'left' : 'right' }));
  const label = (side: 'left' | 'right', halo: boolean): LayerItem => ({
    transform: [{ filter: { field: 'side', equal: side } }],
    mark: {
      type: 'text',
      align: side === 'right' ? 'left' : 'right',
      baseline: 'top',
      dx: side === 'right' ? 4 : -4,
      fontSize: 11,
      ...(halo
        ? { stroke: 'white', strokeWidth: 3, strokeJoin: 'round', fill: 'white' }
        : { fill: '#c0392b' }),
    },
    encoding: {
      x: { field: 'ms', type: 'quantitative' },
      y: { field: 'px', type: 'quantitative', scale: null },
      text: { field: 'stat' },
    },
  });
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    width: WIDTH,
    height: HEIGHT,
    title: {
      text: 'Endpoint change to kernel',
      subtitle: [
        `${r.samples.length} EndpointSlice changes, one at a time, in ${r.services.toLocaleString('en-US')} services`,
        `with ${r.endpoints.toLocaleString('en-US')} endpoints, timed from event to nft transaction done;`,
        'dashed: median and p99',
        ...caption(r),
      ],
    },
    layer: [
      {
        data: { values: r.samples.map((ms) => ({ ms })) },
        mark: { type: 'bar', color: '#4c78a8', binSpacing: 1 },
        encoding: {
          x: {
            field: 'ms',
            type: 'quantitative',
            bin: { maxbins: 40, extent: [0, top] },
            title: 'event to kernel, ms',
            axis: { grid: false },
          },
          y: { aggregate: 'count', type: 'quantitative', title: 'changes', axis: { tickMinStep: 1 } },
        },
      },
      {
        data: { values: marks },
        layer: [
          {
            mark: { type: 'rule', color: '#e45756', strokeWidth: 1.5, strokeDash: [5, 3] },
            encoding: { x: { field: 'ms', type: 'quantitative' } },
          },
          label('right', true),
          label('right', false),
          label('left', true),
          label('left', false),
        ],
      },
    ],
    config,
  };
}

/** Vega-Lite → Vega → SVG text, headless. */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(vegaLite.compile(spec).spec), { renderer: 'none' });
  try {
    return (await view.toSVG()) + '\n';
  } finally {
    view.finalize();
  }
}

const PLOTS = [
  {
    input: 'sync.json',
    output: 'sync.svg',
    benchmark: 'sync',
    spec: (r: unknown) => syncSpec(r as SyncFile),
  },
  {
    input: 'latency.json',
    output: 'latency.svg',
    benchmark: 'latency',
    spec: (r: unknown) => latencySpec(r as LatencyFile),
  },
  {
    input: 'incremental.json',
    output: 'incremental.svg',
    benchmark: 'incremental',
    spec: (r: unknown) => incrementalSpec(r as IncrementalFile),
  },
] as const;

const exists = (path: string) =>
  access(path).then(
    () => true,
    () => false,
  );

/**
 * Draws every plot whose result file is in `inDir` into `outDir` (made if need be); returns
 * the paths written. `log` is told of each file written or skipped.
 */
export async function plotAll(
  inDir: string,
  outDir: string,
  log: (line: string) => void = (line) => console.log(line),
): Promise<string[]> {
  const written: string[] = [];
  for (const plot of PLOTS) {
    const input = join(inDir, plot.input);
    if (!(await exists(input))) {
      log(`skipped ${plot.output}: no ${input}`);
      continue;
    }
    const r = JSON.parse(await readFile(input, 'utf8')) as { benchmark?: unknown };
    if (r.benchmark !== plot.benchmark)
      throw new Error(`${input}: benchmark is ${JSON.stringify(r.benchmark)}, not '${plot.benchmark}'`);
    const svg = await renderSvg(plot.spec(r));
    await mkdir(outDir, { recursive: true });
    const output = join(outDir, plot.output);
    await writeFile(output, svg);
    log(`wrote ${output}`);
    written.push(output);
  }
  return written;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    options: {
      in: { type: 'string', default: repoPath('bench', 'results') },
      out: { type: 'string', default: repoPath('docs', 'img') },
    },
  });
  await plotAll(values.in, values.out);
}
