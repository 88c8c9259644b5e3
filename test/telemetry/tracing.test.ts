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
import { Syncer } from '../../src/controller/syncer.js';
import type { SyncRequest } from '../../src/controller/queue.js';
import { parseResource } from '../../src/k8s/parse.js';
import { ClusterStore } from '../../src/k8s/store.js';
import { NftError, NftErrorKind } from '../../src/nft/errors.js';
import { FakeBackend } from '../../src/nft/fake.js';
import { parseProxyConfig } from '../../src/proxy/config.js';
import { setupTracing, Spans, tracesExporters, type Tracing } from '../../src/telemetry/tracing.js';
import { service } from '../support/cluster.js';

const CONFIG = parseProxyConfig({ nodeName: 'n1', clusterCIDRs: ['10.244.0.0/16'] });
const TRIGGER = '2026-11-23T10:00:00Z';

function slice(name: string, ips: string[], trigger?: string) {
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
    ports: [{ port: 8080 }],
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

  function world() {
    const store = new ClusterStore('n1', () => Date.parse('2026-11-23T10:00:02Z'));
    const fake = new FakeBackend();
    const syncer = new Syncer(store, CONFIG, fake);
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

  it('with tracing off, spans are not recorded and nothing is linked', async () => {
    await tracing.shutdown();
    const w = world();
    const r = await w.syncer.sync(request(true));
    assert.equal(exporter.getFinishedSpans().length, 0);
    assert.equal(trace.getActiveSpan(), undefined);
    assert.equal(r.endpointChanges.length, 1, 'the sync itself is unchanged');
    tracing = setupTracing({ processors: [new SimpleSpanProcessor(exporter)] }); // for afterEach
  });
});

describe('tracing setup from the environment', () => {
  it('is off unless asked for', () => {
    assert.deepEqual(tracesExporters({}), []);
    assert.deepEqual(tracesExporters({ OTEL_TRACES_EXPORTER: 'none' }), []);
    assert.deepEqual(tracesExporters({ OTEL_TRACES_EXPORTER: 'console' }), ['console']);
    assert.deepEqual(tracesExporters({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' }), ['otlp']);
    assert.deepEqual(tracesExporters({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://c:4318/v1/traces' }), [
      'otlp',
    ]);
    assert.deepEqual(tracesExporters({ OTEL_TRACES_EXPORTER: 'otlp, console' }), ['otlp', 'console']);
    assert.deepEqual(tracesExporters({}, { console: true }), ['console']);
    assert.deepEqual(
      tracesExporters({ OTEL_SDK_DISABLED: 'true', OTEL_TRACES_EXPORTER: 'otlp' }, { console: true }),
      [],
    );
    assert.throws(() => tracesExporters({ OTEL_TRACES_EXPORTER: 'zipkin' }), /unknown exporter "zipkin"/);
    const off = setupTracing({ env: {} });
    assert.equal(off.enabled, false);
  });

  it('exports a sync over OTLP/HTTP to the configured endpoint, flushed at shutdown', async () => {
    const received: { url: string; type: string; bytes: number }[] = [];
    const server = createServer((req, res) => {
      let bytes = 0;
      req.on('data', (d: Buffer) => (bytes += d.length));
      req.on('end', () => {
        received.push({ url: req.url ?? '', type: String(req.headers['content-type']), bytes });
        res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    const saved = process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
    process.env.OTEL_EXPORTER_OTLP_ENDPOINT = `http://127.0.0.1:${port}`;
    try {
      const tracing = setupTracing({ nodeName: 'n1' });
      assert.deepEqual(tracing.exporters, ['otlp']);
      const store = new ClusterStore('n1');
      store.upsert({
        kind: 'Service',
        object: service('web', { clusterIP: '10.96.0.10', ports: [{ port: 80 }] }),
      });
      await new Syncer(store, CONFIG, new FakeBackend()).sync(request(true));
      assert.equal(received.length, 0, 'batched, not sent yet');
      await tracing.shutdown();
      assert.equal(received.length, 1, JSON.stringify(received));
      assert.equal(received[0]!.url, '/v1/traces');
      assert.equal(received[0]!.type, 'application/json', 'OTLP/HTTP with JSON encoding');
      assert.ok(received[0]!.bytes > 100, `payload of ${received[0]!.bytes} bytes`);
    } finally {
      if (saved === undefined) delete process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
      else process.env.OTEL_EXPORTER_OTLP_ENDPOINT = saved;
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });
});
