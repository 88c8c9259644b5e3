/**
 * Every sync is one trace: the span tree and attributes of a full, a partial and a failed
 * sync (in-memory exporter), the links to EndpointSlice changes, and how the OTEL_*
 * environment turns tracing on and off (OTLP/HTTP to a local receiver).
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SpanStatusCode, trace } from '@opentelemetry/api';
import { InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { AffinityCleaner } from '../../src/controller/affinity.js';
import { ConntrackCleaner, type Flow, type StaleFlow } from '../../src/controller/conntrack.js';
import { Syncer, type SyncerOptions } from '../../src/controller/syncer.js';
import type { SyncRequest } from '../../src/controller/queue.js';
import { parseResource } from '../../src/k8s/parse.js';
import { ClusterStore } from '../../src/k8s/store.js';
import { NftError, NftErrorKind } from '../../src/nft/errors.js';
import { FakeBackend } from '../../src/nft/fake.js';
import { traced } from '../../src/nft/traced.js';
import { parseProxyConfig } from '../../src/proxy/config.js';
import {
  otlpTracesUrl,
  setupTracing,
  Spans,
  tracer,
  tracesExporters,
  type Tracing,
} from '../../src/telemetry/tracing.js';
import { service } from '../support/cluster.js';

const CONFIG = parseProxyConfig({ nodeName: 'n1', clusterCIDRs: ['10.244.0.0/16'] });
const TRIGGER = '2026-11-23T10:00:00Z';

function slice(name: string, ips: string[], trigger?: string, protocol = 'TCP') {
  const { parsed } = parseResource({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name: `${name}-1`,
      namespace: 'default',
      labels: { 'kubernetes.io/service-name': name },
      ...(trigger ? { annotations: { 'endpoints.kubernetes.io/last-change-trigger-time': trigger } } : {}),
    },
    addressType: 'IPv4',
    ports: [{ port: 8080, protocol }],
    endpoints: ips.map((ip) => ({ addresses: [ip] })),
  });
  assert.ok(parsed, 'fixture parses');
  return parsed;
}

const request = (full: boolean, dirty: string[] = [], reason = full ? 'start' : 'change'): SyncRequest => ({
  full,
  dirty: new Set(dirty),
  reasons: new Set([reason]),
  queuedAt: 0,
});

/** Spans by name; exactly one of each asked for. */
function one(spans: ReadableSpan[], name: string): ReadableSpan {
  const found = spans.filter((s) => s.name === name);
  assert.equal(
    found.length,
    1,
    `${name}: ${found.length} spans among ${spans.map((s) => s.name).join(', ')}`,
  );
  return found[0]!;
}

const parentOf = (s: ReadableSpan) => s.parentSpanContext?.spanId;
const hrMs = (t: [number, number]) => t[0] * 1000 + t[1] / 1e6;

/** A conntrack cleaner that records the flows it was asked to delete. */
class RecordingConntrack extends ConntrackCleaner {
  readonly flows: StaleFlow[] = [];
  /** What a full sync finds in conntrack: nothing (the machine's own table is not read). */
  readonly table: Flow[] = [];
  override async clear(flows: StaleFlow[]): Promise<{ failed: number }> {
    this.flows.push(...flows);
    return { failed: 0 };
  }
  override async list(): Promise<Flow[]> {
    return this.table;
  }
}

describe('tracing a sync', () => {
  let exporter: InMemorySpanExporter;
  let tracing: Tracing;

  beforeEach(() => {
    exporter = new InMemorySpanExporter();
    tracing = setupTracing({ processors: [new SimpleSpanProcessor(exporter)] });
  });

  afterEach(async () => {
    await tracing.shutdown();
  });

  function world(opts: (fake: FakeBackend) => SyncerOptions = () => ({})) {
    const store = new ClusterStore('n1', () => Date.parse('2026-11-23T10:00:02Z'));
    const fake = new FakeBackend();
    const syncer = new Syncer(store, CONFIG, fake, opts(fake));
    store.upsert({
      kind: 'Service',
      object: service('web', { clusterIP: '10.96.0.10', ports: [{ port: 80 }] }),
    });
    store.upsert(slice('web', ['10.244.1.1']));
    store.upsert({
      kind: 'Service',
      object: service('api', { clusterIP: '10.96.0.11', ports: [{ port: 80 }] }),
    });
    return { store, fake, syncer };
  }

  it('a full sync: one root span, a child per stage, counts equal to the result', async () => {
    const w = world();
    const r = await w.syncer.sync(request(true));
    const spans = exporter.getFinishedSpans();
    const root = one(spans, Spans.sync);
    assert.equal(parentOf(root), undefined, 'root');
    assert.equal(root.attributes['nftproxy.sync.type'], 'full');
    assert.deepEqual(root.attributes['nftproxy.sync.trigger'], ['start']);
    assert.equal(root.attributes['k8s.node.name'], 'n1');
    assert.equal(root.attributes['nftproxy.services.touched'], 2);
    assert.equal(root.attributes['nftproxy.endpoints.touched'], 1, 'web has one, api none');
    assert.equal(root.attributes['nftproxy.elements.added'], r.diff.elementsAdded);
    assert.equal(root.attributes['nftproxy.nft.bytes'], r.bytes);
    assert.ok(r.bytes > 1000, `bytes ${r.bytes}`);
    assert.equal(root.status.code, SpanStatusCode.UNSET);
    for (const name of [
      Spans.collect,
      Spans.compile,
      Spans.readKernel,
      Spans.diff,
      Spans.render,
      Spans.transaction,
    ]) {
      const s = one(spans, name);
      assert.equal(parentOf(s), root.spanContext().spanId, `${name} is a child of the sync`);
      assert.equal(s.spanContext().traceId, root.spanContext().traceId);
    }
    assert.equal(one(spans, Spans.transaction).attributes['nftproxy.nft.exit_code'], 0);
    assert.equal(one(spans, Spans.transaction).attributes['nftproxy.nft.bytes'], r.bytes);
    // The first sync programs the one endpoint change known (received before it, no trigger time).
    assert.equal(root.links.length, 1);
    const change = one(spans, Spans.endpointChange);
    assert.equal(change.attributes['nftproxy.endpointslice'], 'default/web-1');
    assert.equal(change.attributes['nftproxy.trigger_time_present'], false);
    assert.notEqual(change.spanContext().traceId, root.spanContext().traceId, 'a trace of its own');
    assert.equal(root.links[0]!.context.spanId, change.spanContext().spanId);
  });

  it('a partial sync: no kernel read, linked to the change that caused it, from its trigger time', async () => {
    const w = world();
    await w.syncer.sync(request(true));
    exporter.reset();
    const dirty = w.store.upsert(slice('web', ['10.244.1.1', '10.244.1.2'], TRIGGER)).services;
    const r = await w.syncer.sync(request(false, dirty));
    const spans = exporter.getFinishedSpans();
    const root = one(spans, Spans.sync);
    assert.equal(root.attributes['nftproxy.sync.type'], 'partial');
    assert.equal(root.attributes['nftproxy.services.touched'], 1);
    assert.equal(root.attributes['nftproxy.endpoints.touched'], 2);
    assert.equal(root.attributes['nftproxy.elements.added'], r.diff.elementsAdded);
    assert.ok(r.diff.elementsAdded >= 1);
    assert.equal(spans.filter((s) => s.name === Spans.readKernel).length, 0, 'no kernel read');
    for (const name of [Spans.collect, Spans.compile, Spans.diff, Spans.transaction])
      assert.equal(parentOf(one(spans, name)), root.spanContext().spanId, name);
    const change = one(spans, Spans.endpointChange);
    assert.equal(hrMs(change.startTime), Date.parse(TRIGGER), 'starts at the trigger time');
    assert.equal(hrMs(change.endTime), Date.parse('2026-11-23T10:00:02Z'), 'ends when received');
    assert.equal(change.attributes['nftproxy.trigger_time_present'], true);
    assert.deepEqual(
      root.links.map((l) => l.context.spanId),
      [change.spanContext().spanId],
    );
    assert.deepEqual(
      r.endpointChanges.map((c) => c.triggerTime),
      [Date.parse(TRIGGER)],
    );
    assert.deepEqual(w.store.endpointChanges(), [], 'programmed changes are forgotten');
  });

  it('a failed sync: error status, error.type and exception; the retry links the same change', async () => {
    const w = world();
    await w.syncer.sync(request(true));
    const dirty = w.store.upsert(slice('web', ['10.244.1.3'], TRIGGER)).services;
    exporter.reset();
    w.fake.injectFailure = () => new NftError(NftErrorKind.Failed, 'nft failed (exit 1): Error: boom', '', 1);
    await assert.rejects(w.syncer.sync(request(false, dirty)), /boom/);
    const spans = exporter.getFinishedSpans();
    const root = one(spans, Spans.sync);
    assert.equal(root.status.code, SpanStatusCode.ERROR);
    assert.match(root.status.message ?? '', /boom/);
    assert.equal(root.attributes['error.type'], 'failed');
    assert.ok(
      root.events.some((e) => e.name === 'exception'),
      'exception recorded',
    );
    const tx = one(spans, Spans.transaction);
    assert.equal(tx.status.code, SpanStatusCode.ERROR);
    assert.equal(tx.attributes['nftproxy.nft.exit_code'], 1);
    assert.equal(w.store.endpointChanges().length, 1, 'still pending');
    const linked = root.links[0]!.context.spanId;

    w.fake.injectFailure = undefined;
    exporter.reset();
    await w.syncer.sync(request(false, dirty, 'retry'));
    const retry = one(exporter.getFinishedSpans(), Spans.sync);
    assert.equal(retry.attributes['nftproxy.sync.type'], 'full', 'after a failure the syncer goes full');
    assert.equal(retry.status.code, SpanStatusCode.UNSET);
    assert.deepEqual(
      retry.links.map((l) => l.context.spanId),
      [linked],
      'the same change span',
    );
    assert.equal(
      exporter.getFinishedSpans().filter((s) => s.name === Spans.endpointChange).length,
      0,
      'not a second change span',
    );
  });

  it('cleanups: conntrack and affinity spans under the sync, flows cleared as in the result', async () => {
    const conntrack = new RecordingConntrack();
    const w = world((fake) => ({ conntrack, affinity: new AffinityCleaner(fake) }));
    w.store.upsert({
      kind: 'Service',
      object: service('dns', {
        clusterIP: '10.96.0.53',
        sessionAffinity: 'ClientIP',
        ports: [{ port: 53, protocol: 'UDP' }],
      }),
    });
    w.store.upsert(slice('dns', ['10.244.2.1', '10.244.2.2'], undefined, 'UDP'));
    await w.syncer.sync(request(true)); // clears the untranslated flows of the new service IP
    exporter.reset();
    conntrack.flows.length = 0;
    const dirty = w.store.upsert(slice('dns', ['10.244.2.1'], TRIGGER, 'UDP')).services;
    const r = await w.syncer.sync(request(false, dirty));
    assert.ok(r.staleFlows >= 1, `flows of the removed endpoint: ${r.staleFlows}`);
    assert.equal(conntrack.flows.length, r.staleFlows);
    const spans = exporter.getFinishedSpans();
    const root = one(spans, Spans.sync);
    const ct = one(spans, Spans.conntrack);
    assert.equal(parentOf(ct), root.spanContext().spanId);
    assert.equal(ct.attributes['nftproxy.conntrack.flows_cleared'], r.staleFlows);
    assert.equal(root.attributes['nftproxy.conntrack.flows_cleared'], r.staleFlows);
    const aff = one(spans, Spans.affinity);
    assert.equal(parentOf(aff), root.spanContext().spanId);
    assert.equal(aff.attributes['nftproxy.affinity.entries_cleared'], 0);

    // A new TCP service removes nothing, leaves no UDP flow and takes no affinity endpoint
    // away: no cleanup spans.
    exporter.reset();
    const added = w.store.upsert({
      kind: 'Service',
      object: service('extra', { clusterIP: '10.96.0.12', ports: [{ port: 80 }] }),
    }).services;
    const r2 = await w.syncer.sync(request(false, added));
    assert.equal(r2.staleFlows, 0);
    const after = exporter.getFinishedSpans();
    assert.equal(after.filter((s) => s.name === Spans.conntrack).length, 0, 'no conntrack span');
    assert.equal(after.filter((s) => s.name === Spans.affinity).length, 0, 'no affinity span');
    assert.equal(one(after, Spans.sync).attributes['nftproxy.conntrack.flows_cleared'], 0);
  });

  it('the backends make no spans of their own: traced() makes them, for any backend', async () => {
    const fake = new FakeBackend();
    const tx = { commands: [{ add: { table: { family: 'ip' as const, name: 'probe' } } }] };
    await fake.apply(tx);
    assert.deepEqual(exporter.getFinishedSpans(), [], 'a bare backend records nothing');
    const r = await traced(fake).apply(tx);
    const spans = exporter.getFinishedSpans();
    assert.deepEqual(spans.map((s) => s.name).sort(), [Spans.render, Spans.transaction].sort());
    assert.equal(one(spans, Spans.transaction).attributes['nftproxy.nft.bytes'], r.bytes);
    assert.equal(one(spans, Spans.render).attributes['nftproxy.nft.commands'], 1);
    const once = traced(fake);
    assert.equal(traced(once), once, 'a traced backend is not wrapped again');
    exporter.reset();
    fake.injectFailure = () => new NftError(NftErrorKind.Failed, 'refused', '', 1);
    await assert.rejects(traced(fake).apply(tx), /refused/);
    const failed = one(exporter.getFinishedSpans(), Spans.transaction);
    assert.equal(failed.status.code, SpanStatusCode.ERROR);
    assert.equal(failed.attributes['nftproxy.nft.exit_code'], 1);
  });

  it('with tracing off, nothing records and no work is done for spans alone', async () => {
    /** A full sync of a fresh world: whether the backend ran in a recording span, and slice reads. */
    async function fullSync() {
      const w = world();
      let sliceReads = 0;
      const slicesOf = w.store.slicesOf.bind(w.store);
      w.store.slicesOf = (key) => (sliceReads++, slicesOf(key));
      let recording: boolean | undefined;
      const apply = w.fake.apply.bind(w.fake);
      w.fake.apply = (tx) => ((recording = trace.getActiveSpan()?.isRecording() ?? false), apply(tx));
      const r = await w.syncer.sync(request(true));
      return { w, r, sliceReads, recording };
    }
    const on = await fullSync();
    assert.equal(on.recording, true, 'with tracing on, the backend runs in a recording span');
    await tracing.shutdown();
    const off = await fullSync();
    assert.equal(off.recording, false, 'with tracing off, no recording span is active');
    assert.equal(tracer().startSpan('probe').isRecording(), false, 'the no-op tracer');
    // The endpoints-touched attribute reads every touched service's slices; off, it is skipped.
    assert.ok(off.sliceReads < on.sliceReads, `slice reads off ${off.sliceReads}, on ${on.sliceReads}`);
    assert.deepEqual(off.r.diff, on.r.diff, 'the sync itself is unchanged');
    assert.equal(off.r.endpointChanges.length, 1);
    assert.deepEqual(off.w.store.endpointChanges(), [], 'and forgets what it programmed');
    tracing = setupTracing({ processors: [new SimpleSpanProcessor(exporter)] }); // for afterEach
  });
});

describe('tracing setup from the environment', () => {
  it('chooses exporters by OTEL_TRACES_EXPORTER, the OTLP endpoints and OTEL_SDK_DISABLED', () => {
    assert.deepEqual(tracesExporters({}), []);
    assert.deepEqual(tracesExporters({ OTEL_TRACES_EXPORTER: 'none' }), []);
    assert.deepEqual(tracesExporters({ OTEL_TRACES_EXPORTER: 'console' }), ['console']);
    assert.deepEqual(tracesExporters({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' }), ['otlp']);
    assert.deepEqual(tracesExporters({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://c:4318/v1/traces' }), [
      'otlp',
    ]);
    assert.deepEqual(
      tracesExporters({ OTEL_TRACES_EXPORTER: 'none', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' }),
      [],
      'an explicit list decides',
    );
    assert.deepEqual(tracesExporters({ OTEL_TRACES_EXPORTER: 'otlp, console' }), ['otlp', 'console']);
    assert.deepEqual(tracesExporters({}, { console: true }), ['console']);
    assert.deepEqual(
      tracesExporters({ OTEL_SDK_DISABLED: 'true', OTEL_TRACES_EXPORTER: 'otlp' }, { console: true }),
      [],
    );
    assert.throws(() => tracesExporters({ OTEL_TRACES_EXPORTER: 'zipkin' }), /unknown exporter "zipkin"/);
    assert.equal(otlpTracesUrl({}), undefined);
    assert.equal(otlpTracesUrl({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318/' }), 'http://c:4318/v1/traces');
    assert.equal(
      otlpTracesUrl({
        OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318',
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://t:4318/x',
      }),
      'http://t:4318/x',
    );
  });

  it('registers nothing when nothing asks for tracing, or when the SDK is disabled', async () => {
    const cases = [
      { env: {}, forceConsole: false },
      { env: { OTEL_SDK_DISABLED: 'true', OTEL_TRACES_EXPORTER: 'console' }, forceConsole: true },
    ];
    for (const { env, forceConsole } of cases) {
      const t = setupTracing({ env, console: forceConsole });
      assert.equal(t.enabled, false, JSON.stringify(env));
      assert.equal(
        tracer().startSpan('probe').isRecording(),
        false,
        `no provider for ${JSON.stringify(env)}`,
      );
      await t.shutdown();
    }
  });

  it('prints spans with OTEL_TRACES_EXPORTER=console', async () => {
    const printed: unknown[] = [];
    const dir = console.dir;
    console.dir = (item: unknown) => void printed.push(item);
    const t = setupTracing({ env: { OTEL_TRACES_EXPORTER: 'console' }, nodeName: 'n1' });
    try {
      assert.equal(t.enabled, true);
      assert.deepEqual(t.exporters, ['console']);
      const store = new ClusterStore('n1');
      await new Syncer(store, CONFIG, new FakeBackend()).sync(request(true));
      const names = printed.map((p) => (p as { name?: string }).name);
      assert.ok(names.includes(Spans.sync), `printed: ${names.join(', ')}`);
      assert.ok(names.includes(Spans.collect), `printed: ${names.join(', ')}`);
    } finally {
      await t.shutdown();
      console.dir = dir;
    }
    assert.equal(tracer().startSpan('probe').isRecording(), false, 'unregistered at shutdown');
  });

  /** A local OTLP/HTTP receiver: what it received, and its address. */
  async function receiver() {
    const received: { url: string; type: string; body: string }[] = [];
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (d: Buffer) => chunks.push(d));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString();
        received.push({ url: req.url ?? '', type: String(req.headers['content-type']), body });
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const close = async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    };
    return { received, base, close };
  }

  /** One full sync with tracing set up by `setup`; what the receiver got, checked. */
  async function exportOneSync(rx: Awaited<ReturnType<typeof receiver>>, setup: () => Tracing, path: string) {
    const t = setup();
    try {
      assert.deepEqual(t.exporters, ['otlp']);
      const store = new ClusterStore('n1');
      store.upsert({
        kind: 'Service',
        object: service('web', { clusterIP: '10.96.0.10', ports: [{ port: 80 }] }),
      });
      await new Syncer(store, CONFIG, new FakeBackend()).sync(request(true));
      assert.equal(rx.received.length, 0, 'batched, not sent yet');
    } finally {
      await t.shutdown();
    }
    assert.equal(rx.received.length, 1, JSON.stringify(rx.received.map((r) => r.url)));
    const got = rx.received[0]!;
    assert.equal(got.url, path);
    assert.equal(got.type, 'application/json', 'OTLP/HTTP with JSON encoding');
    assert.ok(got.body.includes(`"${Spans.sync}"`), 'the sync span is in the payload');
    assert.ok(got.body.includes('"service.name"'), 'with the resource');
    assert.ok(got.body.includes('"n1"'), 'and the node name');
  }

  it('exports over OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT (process.env), flushed at shutdown', async () => {
    const rx = await receiver();
    const saved = process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
    process.env.OTEL_EXPORTER_OTLP_ENDPOINT = rx.base;
    try {
      await exportOneSync(rx, () => setupTracing({ nodeName: 'n1' }), '/v1/traces');
    } finally {
      if (saved === undefined) delete process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
      else process.env.OTEL_EXPORTER_OTLP_ENDPOINT = saved;
      await rx.close();
    }
  });

  it('exports to the traces endpoint of an injected environment', async () => {
    const rx = await receiver();
    try {
      const env = { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${rx.base}/collector/traces` };
      await exportOneSync(rx, () => setupTracing({ env, nodeName: 'n1' }), '/collector/traces');
    } finally {
      await rx.close();
    }
  });
});
