/**
 * Prometheus metrics: the registry's text exposition (parsed back by a small parser of the
 * format), the change and sync bookkeeping of ProxyMetrics, the /metrics server, and the
 * operator scraped over HTTP through a full sync, a partial sync with a network programming
 * latency, and an injected nft failure.
 */
import assert from 'node:assert/strict';
import { capturingLogger, type LogLine } from '../support/log.js';
import { readFile } from 'node:fs/promises';
import { Operator } from '../../src/controller/operator.js';
import { noLocalEndpoints } from '../../src/controller/reports.js';
import { resolveSettings } from '../../src/controller/settings.js';
import type { SyncResult } from '../../src/controller/syncer.js';
import { parseResource, type Parsed } from '../../src/k8s/parse.js';
import { ClusterStore } from '../../src/k8s/store.js';
import { MemorySource } from '../support/memory-source.js';
import { NftError, NftErrorKind } from '../../src/nft/errors.js';
import { FakeBackend } from '../../src/nft/fake.js';
import {
  EXPOSITION_CONTENT_TYPE,
  formatValue,
  MetricsServer,
  ProxyMetrics,
  Registry,
} from '../../src/telemetry/metrics.js';
import { eventually } from '../support/eventually.js';

// --- A small parser of the text exposition format 0.0.4 --------------------------------------

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

interface Family {
  help: string;
  type: string;
  samples: Sample[];
}

function unescape(text: string, what: string): string {
  return text.replace(/\\(.)/g, (_, c: string) => {
    if (c === 'n') return '\n';
    if (c === '\\') return '\\';
    if (c === '"' && what === 'label') return '"';
    throw new Error(`bad escape \\${c} in ${what} ${JSON.stringify(text)}`);
  });
}

function parseLabels(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  while (i < text.length) {
    const m = /^([a-zA-Z_][a-zA-Z0-9_]*)="/.exec(text.slice(i));
    if (!m) throw new Error(`bad label at ${JSON.stringify(text.slice(i))}`);
    i += m[0].length;
    let raw = '';
    while (text[i] !== '"') {
      if (i >= text.length) throw new Error(`unterminated label value in ${JSON.stringify(text)}`);
      if (text[i] === '\\') raw += text[i++];
      raw += text[i++];
    }
    i++;
    if (Object.hasOwn(out, m[1]!)) throw new Error(`label ${m[1]} repeated in ${JSON.stringify(text)}`);
    out[m[1]!] = unescape(raw, 'label');
    if (text[i] === ',') i++;
    else if (i !== text.length) throw new Error(`expected , in ${JSON.stringify(text)}`);
  }
  return out;
}

function parseValue(text: string): number {
  if (text === '+Inf') return Infinity;
  if (text === '-Inf') return -Infinity;
  if (text === 'NaN') return NaN;
  if (!/^-?\d+(\.\d+)?(e[+-]?\d+)?$/.test(text)) throw new Error(`bad value ${JSON.stringify(text)}`);
  return Number(text);
}

/** Parses a whole exposition, checking HELP before TYPE before samples of the family. */
function parseExposition(text: string): Map<string, Family> {
  assert.ok(text.endsWith('\n'), 'the exposition ends with a newline');
  const families = new Map<string, Family>();
  let current: { name: string; family: Family } | undefined;
  for (const line of text.slice(0, -1).split('\n')) {
    let m: RegExpExecArray | null;
    if ((m = /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line))) {
      assert.ok(!families.has(m[1]!), `family ${m[1]} declared once`);
      current = { name: m[1]!, family: { help: unescape(m[2]!, 'help'), type: '', samples: [] } };
      families.set(m[1]!, current.family);
    } else if ((m = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram)$/.exec(line))) {
      assert.equal(m[1], current?.name, `TYPE ${m[1]} follows its HELP`);
      assert.equal(current!.family.type, '', `one TYPE for ${m[1]}`);
      current!.family.type = m[2]!;
    } else if ((m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line))) {
      assert.ok(current?.family.type, `sample ${line} comes after a TYPE`);
      const { name, family } = current;
      const suffixes = family.type === 'histogram' ? ['_bucket', '_sum', '_count'] : [''];
      assert.ok(
        suffixes.some((s) => m![1] === name + s),
        `sample ${m[1]} belongs to family ${name} (${family.type})`,
      );
      family.samples.push({ name: m[1]!, labels: parseLabels(m[2] ?? ''), value: parseValue(m[3]!) });
    } else {
      throw new Error(`not a line of the format: ${JSON.stringify(line)}`);
    }
  }
  return families;
}

/** The value of the sample with exactly these labels, or undefined. */
function valueOf(
  families: Map<string, Family>,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  const family = families.get(name.replace(/_(bucket|sum|count)$/, '')) ?? families.get(name);
  const want = JSON.stringify(Object.entries(labels).sort());
  return family?.samples.find(
    (s) => s.name === name && JSON.stringify(Object.entries(s.labels).sort()) === want,
  )?.value;
}

/** Like valueOf, but the sample must exist. */
function must(families: Map<string, Family>, name: string, labels: Record<string, string> = {}): number {
  const v = valueOf(families, name, labels);
  assert.ok(v !== undefined, `sample ${name}${JSON.stringify(labels)} exists`);
  return v;
}

/** Checks each child of a histogram: buckets ascending and cumulative, ending with +Inf = _count. */
function checkHistogram(families: Map<string, Family>, name: string): void {
  const f = families.get(name);
  assert.ok(f?.type === 'histogram', `${name} is a histogram`);
  const children = new Map<string, Sample[]>();
  for (const b of f.samples.filter((s) => s.name === `${name}_bucket`)) {
    const { le: _le, ...rest } = b.labels;
    const key = JSON.stringify(rest);
    children.set(key, [...(children.get(key) ?? []), b]);
  }
  assert.ok(children.size > 0, `${name} has buckets`);
  for (const [key, buckets] of children) {
    const les = buckets.map((b) => parseValue(b.labels.le!));
    assert.deepEqual(
      les,
      [...les].sort((a, b) => a - b),
      `${name}${key} buckets ascend`,
    );
    assert.equal(les.at(-1), Infinity, `${name}${key} ends with +Inf`);
    for (let i = 1; i < buckets.length; i++)
      assert.ok(buckets[i]!.value >= buckets[i - 1]!.value, `${name}${key} buckets are cumulative`);
    const labels = JSON.parse(key) as Record<string, string>;
    assert.equal(
      buckets.at(-1)!.value,
      must(families, `${name}_count`, labels),
      `${name}${key} +Inf = _count`,
    );
    must(families, `${name}_sum`, labels);
  }
}

// --- The registry -------------------------------------------------------------------------

describe('metrics registry: text exposition format 0.0.4', () => {
  it('renders HELP, TYPE and samples, escaping label values and help texts', () => {
    const r = new Registry();
    const g = r.gauge<'path'>({
      name: 'test_gauge',
      help: 'back\\slash and\nnewline "quoted"',
      labelNames: ['path'],
    });
    g.labels({ path: 'a\\b"c\nd' }).set(1.5);
    g.labels({ path: 'plain' }).set(-2);
    const c = r.counter({ name: 'test_total', help: 'a counter' });
    c.inc();
    c.inc(2);
    assert.equal(
      r.render(),
      [
        '# HELP test_gauge back\\\\slash and\\nnewline "quoted"',
        '# TYPE test_gauge gauge',
        'test_gauge{path="a\\\\b\\"c\\nd"} 1.5',
        'test_gauge{path="plain"} -2',
        '# HELP test_total a counter',
        '# TYPE test_total counter',
        'test_total 3',
        '',
      ].join('\n'),
    );
    const parsed = parseExposition(r.render());
    assert.equal(parsed.get('test_gauge')?.help, 'back\\slash and\nnewline "quoted"');
    assert.equal(valueOf(parsed, 'test_gauge', { path: 'a\\b"c\nd' }), 1.5, 'the escaped label parses back');
    assert.equal(valueOf(parsed, 'test_total'), 3);
  });

  it('renders histograms with cumulative buckets, +Inf, _sum and _count', () => {
    const r = new Registry();
    const h = r.histogram<'op'>({ name: 'test_seconds', help: 'h', labelNames: ['op'], buckets: [1, 2, 5] });
    for (const v of [0.5, 1, 3, 10]) h.labels({ op: 'x' }).observe(v);
    assert.equal(
      r.render(),
      [
        '# HELP test_seconds h',
        '# TYPE test_seconds histogram',
        'test_seconds_bucket{op="x",le="1"} 2',
        'test_seconds_bucket{op="x",le="2"} 2',
        'test_seconds_bucket{op="x",le="5"} 3',
        'test_seconds_bucket{op="x",le="+Inf"} 4',
        'test_seconds_sum{op="x"} 14.5',
        'test_seconds_count{op="x"} 4',
        '',
      ].join('\n'),
    );
    const parsed = parseExposition(r.render());
    checkHistogram(parsed, 'test_seconds');
    assert.equal(valueOf(parsed, 'test_seconds_bucket', { op: 'x', le: '5' }), 3);
  });

  it('an unlabelled histogram has its buckets at zero before any observation', () => {
    const r = new Registry();
    r.histogram({ name: 'empty_bytes', help: 'h', buckets: [10, Infinity] });
    assert.equal(
      r.render(),
      [
        '# HELP empty_bytes h',
        '# TYPE empty_bytes histogram',
        // An explicit +Inf bound is the implied one, not a second bucket.
        'empty_bytes_bucket{le="10"} 0',
        'empty_bytes_bucket{le="+Inf"} 0',
        'empty_bytes_sum 0',
        'empty_bytes_count 0',
        '',
      ].join('\n'),
    );
  });

  it('formats special values as the format wants them', () => {
    assert.deepEqual([Infinity, -Infinity, NaN, 0.001, 16.384, 3].map(formatValue), [
      '+Inf',
      '-Inf',
      'NaN',
      '0.001',
      '16.384',
      '3',
    ]);
  });

  it('refuses bad names, duplicates, wrong labels, decreasing counters and unsorted buckets', () => {
    const r = new Registry();
    r.counter({ name: 'ok_total', help: 'x' });
    assert.throws(() => r.counter({ name: 'ok_total', help: 'x' }), /"ok_total" is already registered/);
    assert.throws(() => r.gauge({ name: '0bad', help: 'x' }), /not a valid metric name: "0bad"/);
    assert.throws(
      () => r.gauge({ name: 'g', help: 'x', labelNames: ['__x'] }),
      /not a valid label name: "__x"/,
    );
    assert.throws(
      () => r.histogram({ name: 'h', help: 'x', labelNames: ['le'], buckets: [1] }),
      /label "le"/,
    );
    assert.throws(() => r.histogram({ name: 'h2', help: 'x', buckets: [2, 1] }), /increasing, got \[2,1\]/);
    const g = r.gauge<'a'>({ name: 'lab', help: 'x', labelNames: ['a'] });
    assert.throws(() => g.set(1), /has labels \(a\)/);
    assert.throws(() => g.labels({ a: 'x', b: 'y' } as { a: string }), /no label "b"/);
    const c = r.counter({ name: 'c_total', help: 'x' });
    assert.throws(() => c.inc(-1), /only goes up .* got -1/);
    assert.equal(c.value, 0);
  });
});

// --- ProxyMetrics bookkeeping -------------------------------------------------------------

const result = (over: Partial<SyncResult>): SyncResult => ({
  full: false,
  diff: {
    tablesReplaced: 0,
    tablesDeleted: 0,
    chainsAdded: 0,
    chainsDeleted: 0,
    chainsFlushed: 0,
    setsRewritten: 0,
    elementsAdded: 0,
    elementsDeleted: 0,
    replaceReasons: [],
  },
  commands: 0,
  bytes: 0,
  servicesSynced: 0,
  services: [],
  endpointChanges: [],
  staleFlows: 0,
  durationMs: 5,
  ...over,
});

describe('ProxyMetrics', () => {
  it('keeps a Service change that arrives during a sync pending after it', () => {
    const m = new ProxyMetrics({ since: 0 });
    m.serviceEvent(['default/a']);
    m.serviceEvent(['default/b']);
    m.serviceEvent([]); // a no-op update: seen, not pending
    assert.equal(m.serviceChangesTotal.value, 3);
    assert.equal(m.serviceChangesPending.value, 2);
    const mark = m.syncStarting();
    m.serviceEvent(['default/a']); // while the sync runs
    m.syncSucceeded(result({ services: ['default/a', 'default/b'] }), {
      at: 1000,
      mark,
      localGaps: new Map(),
      conntrack: false,
    });
    assert.equal(m.serviceChangesPending.value, 1, 'default/a changed again after the sync started');
    m.syncSucceeded(result({ full: true }), {
      at: 2000,
      mark: m.syncStarting(),
      localGaps: new Map(),
      conntrack: false,
    });
    assert.equal(m.serviceChangesPending.value, 0, 'a full sync programs every change queued before it');
  });

  it('observes network programming latency from trigger times after its start only', () => {
    const m = new ProxyMetrics({ since: 10_000 });
    m.endpointSliceEvent(1);
    m.endpointSliceEvent(2);
    m.endpointSliceEvent(0);
    assert.equal(m.endpointChangesTotal.value, 3);
    assert.equal(m.endpointChangesPending.value, 3);
    const change = (triggerTime?: number) => ({
      service: 'default/web',
      slice: 'default/web-1',
      receivedAt: 12_000,
      ...(triggerTime !== undefined ? { triggerTime } : {}),
    });
    m.syncSucceeded(result({ endpointChanges: [change(9_000), change(11_500), change(), change(14_000)] }), {
      at: 13_000,
      mark: m.syncStarting(),
      localGaps: new Map(),
      conntrack: false,
    });
    const h = m.networkProgramming.values;
    assert.equal(h.count, 1, 'before the start, without a trigger time, or in the future: not observed');
    assert.equal(h.sum, 1.5);
    assert.equal(m.endpointChangesPending.value, 0);
  });

  it('sums Local policy gaps over services, replacing those a sync recompiled', () => {
    const m = new ProxyMetrics({ since: 0 });
    const sync = (r: Partial<SyncResult>, gaps: [string, number, number][]) =>
      m.syncSucceeded(result(r), {
        at: 1,
        mark: m.syncStarting(),
        localGaps: new Map(gaps.map(([k, internal, external]) => [k, { internal, external }])),
        conntrack: false,
      });
    const value = (p: string) => m.noLocalEndpoints.labels({ traffic_policy: p }).value;
    sync({ full: true }, [
      ['default/a', 1, 0],
      ['default/b', 2, 1],
    ]);
    assert.deepEqual([value('internal'), value('external')], [3, 1]);
    sync({ services: ['default/b'] }, []);
    assert.deepEqual([value('internal'), value('external')], [1, 0], 'b was recompiled and has no gap now');
    sync({ services: ['default/c'] }, [['default/c', 0, 2]]);
    assert.deepEqual([value('internal'), value('external')], [1, 2]);
    sync({ full: true }, [['default/c', 0, 2]]);
    assert.deepEqual([value('internal'), value('external')], [0, 2], 'a full sync replaces every service');
  });

  it('reports the elements and chains programmed, syncs by type and result, bytes sent', () => {
    const m = new ProxyMetrics({ since: 0 });
    m.syncSucceeded(result({ full: true, bytes: 300, staleFlows: 2 }), {
      at: 1,
      mark: 0,
      programmedCounts: { elements: 3, chains: 2 },
      localGaps: new Map(),
      conntrack: true,
    });
    m.syncSucceeded(result({ bytes: 0, staleFlows: 1 }), {
      at: 2,
      mark: 0,
      localGaps: new Map(),
      conntrack: false,
    });
    m.syncFailed('partial');
    assert.equal(m.elementsProgrammed.value, 3);
    assert.equal(m.chainsProgrammed.value, 2);
    assert.equal(m.transactionBytes.values.count, 1, 'a sync that sent nothing is not a transaction');
    assert.equal(m.transactionBytes.values.sum, 300);
    assert.equal(m.staleFlowsCleared.value, 2, 'flows count only where a conntrack cleaner ran');
    assert.equal(m.syncs.labels({ type: 'full', result: 'success' }).value, 1);
    assert.equal(m.syncs.labels({ type: 'partial', result: 'success' }).value, 1);
    assert.equal(m.syncs.labels({ type: 'partial', result: 'failure' }).value, 1);
    assert.equal(m.syncFailures.value, 1);
    assert.equal(m.lastSync.value, 0.002);
  });
});

// --- The /metrics server ------------------------------------------------------------------

describe('MetricsServer', () => {
  let server: MetricsServer;

  afterEach(async () => server?.close());

  it('serves /metrics in the exposition format, 404 elsewhere, 405 for other methods', async () => {
    const r = new Registry();
    r.counter({ name: 'hits_total', help: 'h' }).inc(7);
    server = new MetricsServer(r);
    const port = await server.listen('127.0.0.1:0');
    assert.ok(port > 0);
    const res = await fetch(`http://127.0.0.1:${port}/metrics`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), EXPOSITION_CONTENT_TYPE);
    assert.equal(EXPOSITION_CONTENT_TYPE, 'text/plain; version=0.0.4; charset=utf-8');
    assert.equal(valueOf(parseExposition(await res.text()), 'hits_total'), 7);
    assert.equal((await fetch(`http://127.0.0.1:${port}/metrics?x=1`)).status, 200);
    assert.equal((await fetch(`http://127.0.0.1:${port}/`)).status, 404);
    assert.equal((await fetch(`http://127.0.0.1:${port}/metricsx`)).status, 404);
    assert.equal((await fetch(`http://127.0.0.1:${port}/metrics`, { method: 'POST' })).status, 405);
    await server.close();
    await assert.rejects(fetch(`http://127.0.0.1:${port}/metrics`), 'closed');
  });

  it('refuses a bind address without a port, quoting it', async () => {
    server = new MetricsServer(new Registry());
    await assert.rejects(server.listen('localhost'), /want host:port, got "localhost"/);
  });
});

// --- noLocalEndpoints -----------------------------------------------------------------------

/** Parses one object, which must be valid. */
function parsed(raw: object): Parsed {
  const { parsed: p, diagnostics } = parseResource(raw);
  assert.ok(p, `fixture parses: ${JSON.stringify(diagnostics)}`);
  return p;
}

const CIDRS = ['10.244.0.0/16'];

const svc = (name: string, ip: string, spec: Record<string, unknown> = {}) =>
  parsed({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: 'default' },
    spec: { clusterIP: ip, ports: [{ port: 80, targetPort: 8080 }], ...spec },
  });

const slice = (name: string, endpoints: [string, string][], trigger?: string) =>
  parsed({
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
    endpoints: endpoints.map(([ip, node]) => ({
      addresses: [ip],
      nodeName: node,
      conditions: { ready: true },
    })),
  });

const node = parsed({
  apiVersion: 'v1',
  kind: 'Node',
  metadata: { name: 'n1' },
  status: { addresses: [{ type: 'InternalIP', address: '192.168.1.10' }] },
});

describe('noLocalEndpoints', () => {
  it('counts service ports with a Local policy, endpoints elsewhere and none here', () => {
    const store = new ClusterStore('n1');
    const local = { type: 'NodePort', externalTrafficPolicy: 'Local' };
    for (const p of [
      svc('ext', '10.96.0.1', local),
      slice('ext', [['10.244.2.1', 'n2']]),
      svc('ext-here', '10.96.0.2', local),
      slice('ext-here', [
        ['10.244.2.2', 'n2'],
        ['10.244.1.2', 'n1'],
      ]),
      svc('int', '10.96.0.3', { internalTrafficPolicy: 'Local' }),
      slice('int', [['10.244.2.3', 'n2']]),
      svc('int-none', '10.96.0.4', { internalTrafficPolicy: 'Local' }), // no endpoints at all
      svc('cluster', '10.96.0.5'),
      slice('cluster', [['10.244.2.5', 'n2']]),
      // externalTrafficPolicy only applies to services reachable from outside.
      svc('clusterip-local', '10.96.0.6', { externalTrafficPolicy: 'Local' }),
      slice('clusterip-local', [['10.244.2.6', 'n2']]),
    ])
      store.upsert(p);
    assert.deepEqual(
      noLocalEndpoints(store, 'n1'),
      new Map([
        ['default/ext', { internal: 0, external: 1 }],
        ['default/int', { internal: 1, external: 0 }],
      ]),
    );
    assert.deepEqual(
      noLocalEndpoints(store, 'n1', ['default/int', 'default/gone']),
      new Map([['default/int', { internal: 1, external: 0 }]]),
    );
    assert.deepEqual(noLocalEndpoints(store, 'n2'), new Map(), 'on n2 every Local service has its endpoint');
  });
});

// --- The operator, scraped over HTTP ------------------------------------------------------

/** Elements and chains in the fake kernel. */
function kernelCounts(fake: FakeBackend): { elements: number; chains: number } {
  let elements = 0;
  let chains = 0;
  for (const t of fake.snapshot().tables.values()) {
    chains += t.chains.size;
    for (const s of t.sets.values()) elements += s.elems.size;
  }
  return { elements, chains };
}

describe('operator metrics on /metrics', function () {
  this.timeout(30_000);
  let op: Operator | undefined;

  afterEach(async () => {
    await op?.stop();
    op = undefined;
  });

  const settings = (metricsBindAddress: string) =>
    resolveSettings({
      nodeName: 'n1',
      clusterCIDRs: CIDRS,
      healthzBindAddress: '',
      metricsBindAddress,
      minSyncInterval: '10ms',
      syncPeriod: '1s',
    });

  it('counts full, partial and failed syncs, changes, latency and the programmed rules', async () => {
    const fake = new FakeBackend();
    const lines: LogLine[] = [];
    const syncs: (SyncResult | Error)[] = [];
    const local = {
      type: 'NodePort',
      externalTrafficPolicy: 'Local',
      ports: [{ port: 80, targetPort: 8080, nodePort: 30080 }],
    };
    const source = new MemorySource([
      node,
      svc('web', '10.96.0.10'),
      // A trigger time from before the operator started: the state found, not a change it made.
      slice(
        'web',
        [
          ['10.244.2.1', 'n2'],
          ['10.244.2.2', 'n2'],
        ],
        '2020-01-01T00:00:00Z',
      ),
      svc('ext', '10.96.0.20', local),
      slice('ext', [['10.244.2.3', 'n2']]),
      svc('int', '10.96.0.30', { internalTrafficPolicy: 'Local' }),
      slice('int', [['10.244.2.4', 'n2']]),
    ]);
    const constructedAt = Date.now();
    op = new Operator({
      settings: settings('127.0.0.1:0'),
      source,
      nft: fake,
      log: capturingLogger(lines),
      onSync: (r) => syncs.push(r),
      backoff: { initialMs: 50, maxMs: 200 },
    });
    await op.start();
    assert.ok(op.metricsPort > 0, 'the metrics server listens');
    assert.ok(
      lines.some((l) => l.msg === 'serving /metrics' && l.fields.port === op!.metricsPort),
      'the port is logged',
    );
    const scrape = async () => {
      const res = await fetch(`http://127.0.0.1:${op!.metricsPort}/metrics`);
      assert.equal(res.status, 200, 'scrape answers 200');
      assert.equal(res.headers.get('content-type'), EXPOSITION_CONTENT_TYPE);
      const families = parseExposition(await res.text());
      for (const [name, f] of families) if (f.type === 'histogram') checkHistogram(families, name);
      return families;
    };
    const syncsOf = (m: Map<string, Family>, type: string, result: string) =>
      must(m, 'nftproxy_syncs_total', { type, result });

    // 1. The first (full) sync.
    await op.queue.idle();
    const first = await scrape();
    assert.equal(syncs.length, 1);
    const r1 = syncs[0] as SyncResult;
    assert.equal(r1.full, true);
    assert.equal(syncsOf(first, 'full', 'success'), 1);
    assert.equal(syncsOf(first, 'partial', 'success'), 0);
    assert.equal(syncsOf(first, 'full', 'failure'), 0);
    assert.equal(syncsOf(first, 'partial', 'failure'), 0);
    assert.equal(must(first, 'kubeproxy_sync_proxy_rules_duration_seconds_count'), 1);
    assert.equal(must(first, 'kubeproxy_sync_full_proxy_rules_duration_seconds_count'), 1);
    assert.equal(must(first, 'kubeproxy_sync_partial_proxy_rules_duration_seconds_count'), 0);
    assert.equal(must(first, 'kubeproxy_sync_full_proxy_rules_duration_seconds_sum'), r1.durationMs / 1000);
    const lastSync1 = must(first, 'kubeproxy_sync_proxy_rules_last_timestamp_seconds');
    assert.ok(lastSync1 * 1000 >= constructedAt && lastSync1 * 1000 <= Date.now(), `last sync ${lastSync1}`);
    const queued1 = must(first, 'kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds');
    assert.ok(queued1 * 1000 >= constructedAt && queued1 <= lastSync1, `last queued ${queued1}`);
    assert.equal(must(first, 'kubeproxy_sync_proxy_rules_service_changes_total'), 3);
    assert.equal(must(first, 'kubeproxy_sync_proxy_rules_service_changes_pending'), 0);
    assert.equal(must(first, 'kubeproxy_sync_proxy_rules_endpoint_changes_total'), 3);
    assert.equal(must(first, 'kubeproxy_sync_proxy_rules_endpoint_changes_pending'), 0);
    assert.equal(
      must(first, 'kubeproxy_network_programming_duration_seconds_count'),
      0,
      'old trigger skipped',
    );
    assert.equal(must(first, 'kubeproxy_sync_proxy_rules_nftables_sync_failures_total'), 0);
    assert.equal(
      must(first, 'kubeproxy_sync_proxy_rules_no_local_endpoints_total', { traffic_policy: 'internal' }),
      1,
    );
    assert.equal(
      must(first, 'kubeproxy_sync_proxy_rules_no_local_endpoints_total', { traffic_policy: 'external' }),
      1,
    );
    assert.equal(must(first, 'nftproxy_services_programmed'), 3);
    assert.equal(must(first, 'nftproxy_endpoints_programmed'), op.syncer.current!.stats().endpoints);
    const kernel1 = kernelCounts(fake);
    assert.ok(kernel1.elements > 0);
    assert.equal(must(first, 'nftproxy_elements_programmed'), kernel1.elements, 'elements = the kernel');
    assert.equal(must(first, 'nftproxy_chains_programmed'), kernel1.chains, 'chains = the kernel');
    assert.ok(r1.bytes > 0);
    assert.equal(must(first, 'nftproxy_transaction_bytes_count'), 1);
    assert.equal(must(first, 'nftproxy_transaction_bytes_sum'), r1.bytes);

    // 2. Endpoint changes: a partial sync, with a network programming latency of >= 0.5 s.
    while (Date.now() - constructedAt < 700) await new Promise((r) => setTimeout(r, 50));
    const trigger = Date.now() - 500; // after the operator started, and 0.5 s ago
    source.apply(
      slice(
        'web',
        [
          ['10.244.2.1', 'n2'],
          ['10.244.2.2', 'n2'],
          ['10.244.2.7', 'n2'],
        ],
        new Date(trigger).toISOString(),
      ),
      slice('ext', [['10.244.1.3', 'n1']]), // ext now has its endpoint here; no trigger time
    );
    await op.queue.idle();
    const second = await scrape();
    assert.equal(syncs.length, 2, 'both slices in one partial sync');
    const r2 = syncs[1] as SyncResult;
    assert.equal(r2.full, false);
    assert.equal(syncsOf(second, 'partial', 'success'), 1);
    assert.equal(syncsOf(second, 'full', 'success'), 1);
    assert.equal(must(second, 'kubeproxy_sync_proxy_rules_duration_seconds_count'), 2);
    assert.equal(must(second, 'kubeproxy_sync_partial_proxy_rules_duration_seconds_count'), 1);
    assert.equal(must(second, 'kubeproxy_sync_full_proxy_rules_duration_seconds_count'), 1);
    assert.equal(
      must(second, 'kubeproxy_network_programming_duration_seconds_count'),
      1,
      'one change had a trigger',
    );
    const latency = must(second, 'kubeproxy_network_programming_duration_seconds_sum');
    assert.ok(latency >= 0.5 && latency <= (Date.now() - trigger) / 1000, `latency ${latency}`);
    assert.equal(must(second, 'kubeproxy_network_programming_duration_seconds_bucket', { le: '0.25' }), 0);
    assert.equal(must(second, 'kubeproxy_network_programming_duration_seconds_bucket', { le: '300' }), 1);
    assert.equal(must(second, 'kubeproxy_sync_proxy_rules_endpoint_changes_total'), 5);
    assert.equal(must(second, 'kubeproxy_sync_proxy_rules_endpoint_changes_pending'), 0);
    assert.ok(must(second, 'kubeproxy_sync_proxy_rules_last_timestamp_seconds') >= lastSync1);
    assert.equal(
      must(second, 'kubeproxy_sync_proxy_rules_no_local_endpoints_total', { traffic_policy: 'external' }),
      0,
    );
    assert.equal(
      must(second, 'kubeproxy_sync_proxy_rules_no_local_endpoints_total', { traffic_policy: 'internal' }),
      1,
    );
    const kernel2 = kernelCounts(fake);
    assert.ok(kernel2.elements > kernel1.elements, 'a new backend means more elements');
    assert.equal(must(second, 'nftproxy_elements_programmed'), kernel2.elements);
    assert.equal(must(second, 'nftproxy_endpoints_programmed'), op.syncer.current!.stats().endpoints);
    assert.equal(
      must(second, 'nftproxy_endpoints_programmed'),
      must(first, 'nftproxy_endpoints_programmed') + 1,
      'one more backend of web',
    );
    assert.equal(must(second, 'nftproxy_transaction_bytes_count'), 2);
    assert.equal(must(second, 'nftproxy_transaction_bytes_sum'), r1.bytes + r2.bytes);

    // 3. nft fails: the changes stay pending, failures are counted, nothing else moves.
    let failing = true;
    fake.injectFailure = () => (failing ? new NftError(NftErrorKind.Failed, 'injected failure') : undefined);
    source.apply(svc('api', '10.96.0.40'), slice('api', [['10.244.2.9', 'n2']]));
    await eventually(() =>
      assert.ok(
        syncs.some((s) => s instanceof Error),
        'a sync failed',
      ),
    );
    const third = await scrape();
    const failures = must(third, 'kubeproxy_sync_proxy_rules_nftables_sync_failures_total');
    assert.ok(failures >= 1, `failures ${failures}`);
    assert.equal(syncsOf(third, 'partial', 'failure'), 1, 'the first failure is the partial sync');
    assert.equal(syncsOf(third, 'full', 'failure'), failures - 1, 'retries are full');
    assert.equal(must(third, 'kubeproxy_sync_proxy_rules_service_changes_pending'), 1);
    assert.equal(must(third, 'kubeproxy_sync_proxy_rules_endpoint_changes_pending'), 1);
    assert.equal(must(third, 'kubeproxy_sync_proxy_rules_service_changes_total'), 4);
    assert.equal(
      must(third, 'kubeproxy_sync_proxy_rules_duration_seconds_count'),
      2,
      'only successes are timed',
    );
    assert.equal(
      must(third, 'kubeproxy_sync_proxy_rules_last_timestamp_seconds'),
      must(second, 'kubeproxy_sync_proxy_rules_last_timestamp_seconds'),
    );
    assert.ok(
      must(third, 'kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds') >=
        must(second, 'kubeproxy_sync_proxy_rules_last_timestamp_seconds'),
      'the change was queued after the last sync',
    );
    assert.equal(must(third, 'nftproxy_services_programmed'), 3, 'the kernel still has the old rules');
    assert.equal(must(third, 'nftproxy_elements_programmed'), kernel2.elements);

    failing = false;
    await op.queue.idle();
    const fourth = await scrape();
    const errors = syncs.filter((s) => s instanceof Error).length;
    assert.equal(must(fourth, 'kubeproxy_sync_proxy_rules_nftables_sync_failures_total'), errors);
    assert.equal(syncsOf(fourth, 'partial', 'failure') + syncsOf(fourth, 'full', 'failure'), errors);
    assert.equal(syncsOf(fourth, 'full', 'success'), 2, 'the retry that worked was full');
    assert.equal(syncsOf(fourth, 'partial', 'success'), 1);
    assert.equal(must(fourth, 'kubeproxy_sync_proxy_rules_service_changes_pending'), 0);
    assert.equal(must(fourth, 'kubeproxy_sync_proxy_rules_endpoint_changes_pending'), 0);
    assert.equal(must(fourth, 'nftproxy_services_programmed'), 4);
    assert.equal(must(fourth, 'nftproxy_elements_programmed'), kernelCounts(fake).elements);
    assert.ok(kernelCounts(fake).elements > kernel2.elements);

    // One `synced` info line per successful sync, with its summary.
    const results = syncs.filter((s): s is SyncResult => !(s instanceof Error));
    const synced = lines.filter((l) => l.msg === 'synced');
    assert.equal(synced.length, results.length, 'one synced line per successful sync');
    assert.equal(results.length, 3);
    synced.forEach((l, i) => {
      const r = results[i]!;
      assert.equal(l.level, 'info');
      assert.deepEqual(
        {
          full: l.fields.full,
          services: l.fields.services,
          commands: l.fields.commands,
          bytes: l.fields.bytes,
          elementsAdded: l.fields.elementsAdded,
          elementsDeleted: l.fields.elementsDeleted,
          tablesReplaced: l.fields.tablesReplaced,
          staleFlows: l.fields.staleFlows,
          durationMs: l.fields.durationMs,
        },
        {
          full: r.full,
          services: r.servicesSynced,
          commands: r.commands,
          bytes: r.bytes,
          elementsAdded: r.diff.elementsAdded,
          elementsDeleted: r.diff.elementsDeleted,
          tablesReplaced: r.diff.tablesReplaced,
          staleFlows: r.staleFlows,
          durationMs: r.durationMs,
        },
        `synced line ${i}`,
      );
      assert.ok(
        Array.isArray(l.fields.reasons) && l.fields.reasons.length > 0,
        `synced line ${i} has reasons`,
      );
    });
    assert.deepEqual(
      synced.map((l) => l.fields.reasons),
      [['start'], ['change'], ['retry']],
    );

    const port = op.metricsPort;
    await op.stop();
    op = undefined;
    await assert.rejects(fetch(`http://127.0.0.1:${port}/metrics`), 'the server is closed on stop');
  });

  it('serves nothing when the metrics bind address is empty', async () => {
    const lines: LogLine[] = [];
    op = new Operator({
      settings: settings(''),
      source: new MemorySource([svc('web', '10.96.0.10')]),
      nft: new FakeBackend(),
      log: capturingLogger(lines),
    });
    await op.start();
    await op.queue.idle();
    assert.equal(op.metricsPort, 0);
    assert.ok(!lines.some((l) => l.msg === 'serving /metrics'), 'no metrics server');
    assert.equal(op.metrics.syncs.labels({ type: 'full', result: 'success' }).value, 1, 'still counted');
  });
});

// --- The Grafana dashboard ----------------------------------------------------------------

describe('config/grafana/nftproxy-dashboard.json', () => {
  it('queries only metrics nftproxy exports, with datasource and node variables', async () => {
    const text = await readFile(
      new URL('../../config/grafana/nftproxy-dashboard.json', import.meta.url),
      'utf8',
    );
    const dash = JSON.parse(text) as {
      schemaVersion: number;
      templating: { list: { name: string; type: string; query?: unknown }[] };
      panels: { type: string; title: string; targets?: { expr: string }[] }[];
    };
    assert.ok(dash.schemaVersion >= 38, `schemaVersion ${dash.schemaVersion}`);
    const vars = new Map(dash.templating.list.map((v) => [v.name, v]));
    assert.equal(vars.get('datasource')?.type, 'datasource');
    assert.equal(vars.get('datasource')?.query, 'prometheus');
    assert.equal(vars.get('node')?.type, 'query');
    const exported = new Set(parseExposition(new ProxyMetrics({ since: 0 }).registry.render()).keys());
    const exprs = dash.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
    assert.ok(exprs.length >= 10, `${exprs.length} queries`);
    for (const expr of exprs) assert.match(expr, /instance=~"\$node"/, `${expr} is filtered by node`);
    const used = new Set<string>();
    for (const expr of [...exprs, JSON.stringify(vars.get('node')?.query)]) {
      for (const [name] of expr.matchAll(/\b(?:kubeproxy|nftproxy)_[a-z_]+/g)) {
        const family = exported.has(name) ? name : name.replace(/_(bucket|sum|count)$/, '');
        assert.ok(exported.has(family), `${name} in ${expr} is exported`);
        used.add(family);
      }
    }
    for (const name of [
      'kubeproxy_sync_full_proxy_rules_duration_seconds',
      'kubeproxy_sync_partial_proxy_rules_duration_seconds',
      'kubeproxy_network_programming_duration_seconds',
      'kubeproxy_sync_proxy_rules_nftables_sync_failures_total',
      'kubeproxy_sync_proxy_rules_endpoint_changes_pending',
      'kubeproxy_sync_proxy_rules_service_changes_pending',
      'kubeproxy_sync_proxy_rules_last_timestamp_seconds',
      'kubeproxy_sync_proxy_rules_no_local_endpoints_total',
      'nftproxy_services_programmed',
      'nftproxy_endpoints_programmed',
      'nftproxy_elements_programmed',
      'nftproxy_transaction_bytes',
    ])
      assert.ok(used.has(name), `the dashboard shows ${name}`);
    const quantiles = exprs.filter((e) => e.startsWith('histogram_quantile('));
    assert.ok(
      quantiles.every((e) => /rate\([a-z_]+_bucket\{/.test(e)),
      'quantiles come from rates of _bucket series',
    );
  });
});
