/**
 * What tracing costs a sync: partial syncs (one endpoint change each) of a cluster of
 * `services` services, with tracing off (no provider registered: the API's no-op tracer) and
 * on (every span recorded into an in-memory exporter), in interleaved blocks. The nft side
 * is a backend that renders the transaction (as the real one does) and applies nothing, so
 * the figures are nftproxy's own time. Prints a markdown table.
 *
 *   node --import tsx bench/tracing-overhead.ts [services] [syncs per block] [blocks]
 */
import { performance } from 'node:perf_hooks';
import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { Syncer } from '../src/controller/syncer.js';
import { ClusterStore } from '../src/k8s/store.js';
import type { EndpointSlice } from '../src/k8s/types.js';
import type { NftBackend } from '../src/nft/backend.js';
import { describeIR } from '../src/nft/diff.js';
import { renderTransaction } from '../src/nft/render.js';
import { parseProxyConfig } from '../src/proxy/config.js';
import { Attr, inSpan, setupTracing, Spans } from '../src/telemetry/tracing.js';
import { syntheticCluster } from '../test/support/synthetic.js';

const services = Number(process.argv[2] ?? 10_000);
const perBlock = Number(process.argv[3] ?? 200);
const blocks = Number(process.argv[4] ?? 6);

/**
 * Renders like the exec backend, with the same two spans, and applies nothing; the kernel is
 * "empty" for full syncs. (The FakeBackend would copy the whole ruleset on every apply, a
 * cost of its own that has nothing to do with tracing.)
 */
const backend: NftBackend = {
  apply: async (tx) => {
    const script = await inSpan(Spans.render, { [Attr.commands]: tx.commands.length }, () =>
      renderTransaction(tx),
    );
    const bytes = Buffer.byteLength(script);
    await inSpan(Spans.transaction, { [Attr.bytes]: bytes, [Attr.commands]: tx.commands.length }, (s) =>
      s.setAttribute(Attr.exitCode, 0),
    );
    return { bytes };
  },
  name: 'null',
  describe: describeIR,
  typeofRulesNeedNewTable: false,
  readLimit: Infinity,
  describeTable: async () => undefined,
  listElements: async () => undefined,
};

const cluster = syntheticCluster(services);
const store = new ClusterStore('n');
for (const s of cluster.services) store.upsert({ kind: 'Service', object: s });
for (const s of cluster.endpointSlices) store.upsert({ kind: 'EndpointSlice', object: s });
const syncer = new Syncer(
  store,
  parseProxyConfig({ nodeName: 'n', clusterCIDRs: ['10.128.0.0/9'] }),
  backend,
);
await syncer.sync({ full: true, dirty: new Set(), reasons: new Set(['start']), queuedAt: 0 });

let n = 0;
/** One endpoint change to a service, then the partial sync that programs it; its time. */
async function oneSync(): Promise<number> {
  const i = n++ % services;
  const slice = cluster.endpointSlices[i]!;
  const changed: EndpointSlice = {
    ...slice,
    metadata: {
      ...slice.metadata,
      annotations: { 'endpoints.kubernetes.io/last-change-trigger-time': new Date().toISOString() },
    },
    endpoints: slice.endpoints.map((e, j) =>
      j === 0 ? { ...e, address: `10.250.${(n >> 8) & 255}.${n & 255}` } : e,
    ),
  };
  const dirty = store.upsert({ kind: 'EndpointSlice', object: changed }).services;
  const start = performance.now();
  await syncer.sync({ full: false, dirty: new Set(dirty), reasons: new Set(['change']), queuedAt: 0 });
  return performance.now() - start;
}

const times = { off: [] as number[], on: [] as number[] };
let spans = 0;
for (let b = 0; b < blocks; b++) {
  for (const mode of ['off', 'on'] as const) {
    // A fresh exporter per block: shutdown stops one, and a stopped exporter fails every export.
    const exporter = new InMemorySpanExporter();
    const tracing =
      mode === 'on' ? setupTracing({ processors: [new SimpleSpanProcessor(exporter)] }) : undefined;
    for (let i = 0; i < perBlock; i++) times[mode].push(await oneSync());
    spans += exporter.getFinishedSpans().length;
    await tracing?.shutdown();
  }
}
const spansPerSync = spans / (blocks * perBlock);
if (spans === 0) throw new Error('tracing on recorded no spans');

const q = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))]!;
console.log(
  `Partial sync of one endpoint change at ${services} services, ${blocks} interleaved blocks of ${perBlock} syncs per mode (on: ${spansPerSync} spans per sync):\n`,
);
console.log('| tracing | median | p99 | mean |');
console.log('| --- | --- | --- | --- |');
for (const mode of ['off', 'on'] as const) {
  const xs = times[mode];
  const f = (ms: number) => `${ms.toFixed(3)} ms`;
  console.log(
    `| ${mode} | ${f(q(xs, 0.5))} | ${f(q(xs, 0.99))} | ${f(xs.reduce((a, b) => a + b, 0) / xs.length)} |`,
  );
}

// What the instrumentation itself costs with tracing off: a span through the no-op tracer.
const calls = 200_000;
const t0 = performance.now();
for (let i = 0; i < calls; i++) await inSpan(Spans.collect, { [Attr.servicesTouched]: i }, () => i);
const perSpanUs = ((performance.now() - t0) * 1000) / calls;
console.log(
  `\nWith tracing off one span costs ${perSpanUs.toFixed(2)} µs (${calls} through the no-op tracer); a partial sync makes 6.`,
);
