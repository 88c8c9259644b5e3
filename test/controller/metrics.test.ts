/**
 * Metrics: the change and sync bookkeeping of ProxyMetrics, what is read when scraped, and
 * the operator scraped over HTTP through a full sync, a partial sync with a network
 * programming latency, and an injected nft failure.
 */
import assert from 'node:assert/strict';
import { capturingLogger, type LogLine } from '../support/log.js';
import { readFile } from 'node:fs/promises';
import { Operator } from '../../src/controller/operator.js';
import { noLocalEndpoints } from '../../src/controller/reports.js';
import type { SyncResult } from '../../src/controller/syncer.js';
import { parseResource, type Parsed } from '../../src/k8s/parse.js';
import { ClusterStore } from '../../src/k8s/store.js';
import { MemorySource } from '../support/memory-source.js';
import { NftError, NftErrorKind } from '../../src/nft/errors.js';
import { FakeBackend } from '../../src/nft/fake.js';
import { ProxyMetrics } from '../../src/controller/metrics.js';
import { samplesOf, type Samples } from '../support/metrics.js';
import { eventually } from '../support/eventually.js';
import { ShiftedClock } from '../support/clock.js';
import { testSettings } from '../support/operator.js';

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
  const noProcess = { processMetrics: false };

  it('keeps a Service change that arrives during a sync pending after it', async () => {
    const m = new ProxyMetrics({ since: 0, ...noProcess });
    m.serviceEvent(['default/a']);
    m.serviceEvent(['default/b']);
    m.serviceEvent([]); // a no-op update: seen, not pending
    let now = await samplesOf(m.registry);
    assert.equal(now.must('kubeproxy_sync_proxy_rules_service_changes_total'), 3);
    assert.equal(now.must('kubeproxy_sync_proxy_rules_service_changes_pending'), 2);
    const mark = m.syncStarting();
    m.serviceEvent(['default/a']); // while the sync runs
    m.syncSucceeded(result({ services: ['default/a', 'default/b'] }), {
      at: 1000,
      mark,
      localGaps: new Map(),
      conntrack: false,
    });
    now = await samplesOf(m.registry);
    assert.equal(
      now.must('kubeproxy_sync_proxy_rules_service_changes_pending'),
      1,
      'default/a changed again after the sync started',
    );
    m.syncSucceeded(result({ full: true }), {
      at: 2000,
      mark: m.syncStarting(),
      localGaps: new Map(),
      conntrack: false,
    });
    now = await samplesOf(m.registry);
    assert.equal(
      now.must('kubeproxy_sync_proxy_rules_service_changes_pending'),
      0,
      'a full sync programs every change queued before it',
    );
  });

  it('observes network programming latency from trigger times after its start only', async () => {
    const m = new ProxyMetrics({ since: 10_000, ...noProcess });
    m.endpointSliceEvent(1);
    m.endpointSliceEvent(2);
    m.endpointSliceEvent(0);
    const before = await samplesOf(m.registry);
    assert.equal(before.must('kubeproxy_sync_proxy_rules_endpoint_changes_total'), 3);
    assert.equal(before.must('kubeproxy_sync_proxy_rules_endpoint_changes_pending'), 3);
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
    const after = await samplesOf(m.registry);
    assert.equal(
      after.must('kubeproxy_network_programming_duration_seconds_count'),
      1,
      'before the start, without a trigger time, or in the future: not observed',
    );
    assert.equal(after.must('kubeproxy_network_programming_duration_seconds_sum'), 1.5);
    assert.equal(after.must('kubeproxy_network_programming_duration_seconds_bucket', { le: '1' }), 0);
    assert.equal(after.must('kubeproxy_network_programming_duration_seconds_bucket', { le: '2' }), 1);
    assert.equal(after.must('kubeproxy_sync_proxy_rules_endpoint_changes_pending'), 0);
  });

  it('sums Local policy gaps over services, replacing those a sync recompiled', async () => {
    const m = new ProxyMetrics({ since: 0, ...noProcess });
    const sync = async (r: Partial<SyncResult>, gaps: [string, number, number][]) => {
      m.syncSucceeded(result(r), {
        at: 1,
        mark: m.syncStarting(),
        localGaps: new Map(gaps.map(([k, internal, external]) => [k, { internal, external }])),
        conntrack: false,
      });
      const now = await samplesOf(m.registry);
      const name = 'kubeproxy_sync_proxy_rules_no_local_endpoints_total';
      return [now.must(name, { traffic_policy: 'internal' }), now.must(name, { traffic_policy: 'external' })];
    };
    assert.deepEqual(
      await sync({ full: true }, [
        ['default/a', 1, 0],
        ['default/b', 2, 1],
      ]),
      [3, 1],
    );
    assert.deepEqual(
      await sync({ services: ['default/b'] }, []),
      [1, 0],
      'b was recompiled and has no gap now',
    );
    assert.deepEqual(await sync({ services: ['default/c'] }, [['default/c', 0, 2]]), [1, 2]);
    assert.deepEqual(
      await sync({ full: true }, [['default/c', 0, 2]]),
      [0, 2],
      'a full sync replaces every service',
    );
  });

  it('reports the elements and chains programmed, syncs by type and result, bytes sent', async () => {
    const m = new ProxyMetrics({ since: 0, ...noProcess });
    const zero = await samplesOf(m.registry);
    for (const type of ['full', 'partial'])
      for (const result of ['success', 'failure'])
        assert.equal(zero.value('nftproxy_syncs_total', { type, result }), 0, `${type} ${result} at zero`);
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
    const now = await samplesOf(m.registry);
    assert.equal(now.must('nftproxy_elements_programmed'), 3);
    assert.equal(now.must('nftproxy_chains_programmed'), 2);
    assert.equal(
      now.must('nftproxy_transaction_bytes_count'),
      1,
      'a sync that sent nothing is not a transaction',
    );
    assert.equal(now.must('nftproxy_transaction_bytes_sum'), 300);
    assert.equal(
      now.must('nftproxy_stale_flows_cleared_total'),
      2,
      'flows count only where a conntrack cleaner ran',
    );
    assert.equal(now.must('nftproxy_syncs_total', { type: 'full', result: 'success' }), 1);
    assert.equal(now.must('nftproxy_syncs_total', { type: 'partial', result: 'success' }), 1);
    assert.equal(now.must('nftproxy_syncs_total', { type: 'partial', result: 'failure' }), 1);
    assert.equal(now.must('kubeproxy_sync_proxy_rules_nftables_sync_failures_total'), 1);
    assert.equal(now.must('kubeproxy_sync_proxy_rules_last_timestamp_seconds'), 0.002);
  });

  it('reads the programmed figures, the watches and the endpoint counters when scraped', async () => {
    let figures: { services: number; endpoints: number } | undefined = { services: 2, endpoints: 5 };
    let failures = 1;
    let counters: Promise<{ connections: number; endpoint: string }[] | undefined> = Promise.resolve([
      { endpoint: '10.244.1.1:80', connections: 4 },
      { endpoint: '10.244.1.2:80', connections: 6 },
      { endpoint: '10.244.1.3:80', connections: 1 },
    ]);
    const m = new ProxyMetrics({
      since: 0,
      ...noProcess,
      programmed: () => figures,
      watches: () => [{ resource: 'Service', connected: true, lastEventAt: 3000, failures }],
      endpointCounters: {
        read: async () =>
          (await counters)?.map((c) => ({
            service: 'default/web',
            portName: 'http',
            address: '10.96.0.10',
            protocol: 'tcp',
            port: 80,
            ...c,
          })),
        maxSeries: 2,
      },
    });
    const labels = (endpoint: string) => ({
      service: 'default/web',
      port_name: 'http',
      address: '10.96.0.10',
      protocol: 'tcp',
      port: '80',
      endpoint,
    });
    const scraped = async () => {
      const text = await m.scrape();
      assert.match(text, /^# TYPE nftproxy_endpoint_connections_total counter$/m);
      return samplesOf(m.registry);
    };
    let now = await scraped();
    assert.equal(now.must('nftproxy_services_programmed'), 2);
    assert.equal(now.must('nftproxy_endpoints_programmed'), 5);
    assert.equal(now.must('nftproxy_watch_connected', { resource: 'Service' }), 1);
    assert.equal(now.must('nftproxy_watch_last_event_timestamp_seconds', { resource: 'Service' }), 3);
    assert.equal(now.must('nftproxy_watch_failures_total', { resource: 'Service' }), 1);
    assert.equal(now.must('nftproxy_endpoint_connections_total', labels('10.244.1.1:80')), 4);
    assert.equal(now.must('nftproxy_endpoint_connections_total', labels('10.244.1.2:80')), 6);
    assert.equal(
      now.value('nftproxy_endpoint_connections_total', labels('10.244.1.3:80')),
      undefined,
      'over the limit',
    );
    assert.equal(now.must('nftproxy_endpoint_connections_series_dropped'), 1);

    figures = undefined; // no rules yet: the last figures stay
    failures = 3;
    counters = Promise.resolve([{ endpoint: '10.244.1.2:80', connections: 9 }]);
    now = await scraped();
    assert.equal(now.must('nftproxy_services_programmed'), 2);
    assert.equal(now.must('nftproxy_watch_failures_total', { resource: 'Service' }), 3, 'the source counts');
    assert.equal(
      now.value('nftproxy_endpoint_connections_total', labels('10.244.1.1:80')),
      undefined,
      'gone',
    );
    assert.equal(now.must('nftproxy_endpoint_connections_total', labels('10.244.1.2:80')), 9);
    assert.equal(now.must('nftproxy_endpoint_connections_series_dropped'), 0);

    counters = Promise.reject(new Error('netlink: EPERM'));
    counters.catch(() => undefined);
    now = await scraped();
    assert.equal(
      now.must('nftproxy_endpoint_connections_total', labels('10.244.1.2:80')),
      9,
      'a failed read keeps the last values',
    );
  });

  it("exports the process's resident memory, CPU, heap and event loop lag", async () => {
    const text = await new ProxyMetrics({ since: 0 }).scrape();
    for (const name of [
      'process_resident_memory_bytes',
      'process_cpu_seconds_total',
      'nodejs_heap_size_used_bytes',
      'nodejs_eventloop_lag_seconds',
    ])
      assert.match(text, new RegExp(`^${name} [0-9.e+-]+$`, 'm'), name);
    const rss = Number(/^process_resident_memory_bytes (\S+)$/m.exec(text)![1]);
    assert.ok(rss > 10e6 && Math.abs(rss - process.memoryUsage().rss) < 100e6, `rss ${rss}`);
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
    testSettings({
      nodeName: 'n1',
      clusterCIDRs: CIDRS,
      metricsBindAddress,
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
    // Real timers, time moved by hand: a trigger time after the start needs no waiting.
    const clock = new ShiftedClock();
    const constructedAt = clock.now();
    op = new Operator({
      settings: settings('127.0.0.1:0'),
      source,
      nft: fake,
      log: capturingLogger(lines),
      onSync: (r) => syncs.push(r),
      backoff: { initialMs: 50, maxMs: 200 },
      clock,
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
      assert.equal(res.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
      const text = await res.text();
      const now = await samplesOf(op!.metrics.registry);
      // The answer is the registry as the scrape left it.
      for (const type of ['full', 'partial'])
        for (const result of ['success', 'failure']) {
          const line = `nftproxy_syncs_total{type="${type}",result="${result}"} ${now.must('nftproxy_syncs_total', { type, result })}`;
          assert.ok(text.split('\n').includes(line), `${line} is served`);
        }
      return now;
    };
    const syncsOf = (m: Samples, type: string, result: string) =>
      m.must('nftproxy_syncs_total', { type, result });

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
    assert.equal(first.must('kubeproxy_sync_proxy_rules_duration_seconds_count'), 1);
    assert.equal(first.must('kubeproxy_sync_full_proxy_rules_duration_seconds_count'), 1);
    assert.equal(first.must('kubeproxy_sync_partial_proxy_rules_duration_seconds_count'), 0);
    assert.equal(first.must('kubeproxy_sync_full_proxy_rules_duration_seconds_sum'), r1.durationMs / 1000);
    const lastSync1 = first.must('kubeproxy_sync_proxy_rules_last_timestamp_seconds');
    assert.ok(lastSync1 * 1000 >= constructedAt && lastSync1 * 1000 <= clock.now(), `last sync ${lastSync1}`);
    const queued1 = first.must('kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds');
    assert.ok(queued1 * 1000 >= constructedAt && queued1 <= lastSync1, `last queued ${queued1}`);
    assert.equal(first.must('kubeproxy_sync_proxy_rules_service_changes_total'), 3);
    assert.equal(first.must('kubeproxy_sync_proxy_rules_service_changes_pending'), 0);
    assert.equal(first.must('kubeproxy_sync_proxy_rules_endpoint_changes_total'), 3);
    assert.equal(first.must('kubeproxy_sync_proxy_rules_endpoint_changes_pending'), 0);
    assert.equal(
      first.must('kubeproxy_network_programming_duration_seconds_count'),
      0,
      'old trigger skipped',
    );
    assert.equal(first.must('kubeproxy_sync_proxy_rules_nftables_sync_failures_total'), 0);
    assert.equal(
      first.must('kubeproxy_sync_proxy_rules_no_local_endpoints_total', { traffic_policy: 'internal' }),
      1,
    );
    assert.equal(
      first.must('kubeproxy_sync_proxy_rules_no_local_endpoints_total', { traffic_policy: 'external' }),
      1,
    );
    assert.equal(first.must('nftproxy_services_programmed'), 3);
    assert.equal(first.must('nftproxy_endpoints_programmed'), op.syncer.current!.stats().endpoints);
    const kernel1 = kernelCounts(fake);
    assert.ok(kernel1.elements > 0);
    assert.equal(first.must('nftproxy_elements_programmed'), kernel1.elements, 'elements = the kernel');
    assert.equal(first.must('nftproxy_chains_programmed'), kernel1.chains, 'chains = the kernel');
    assert.ok(r1.bytes > 0);
    assert.equal(first.must('nftproxy_transaction_bytes_count'), 1);
    assert.equal(first.must('nftproxy_transaction_bytes_sum'), r1.bytes);

    // 2. Endpoint changes: a partial sync, with a network programming latency of >= 0.5 s.
    clock.shift(700);
    const trigger = clock.now() - 500; // after the operator started, and 0.5 s ago
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
    assert.equal(second.must('kubeproxy_sync_proxy_rules_duration_seconds_count'), 2);
    assert.equal(second.must('kubeproxy_sync_partial_proxy_rules_duration_seconds_count'), 1);
    assert.equal(second.must('kubeproxy_sync_full_proxy_rules_duration_seconds_count'), 1);
    assert.equal(
      second.must('kubeproxy_network_programming_duration_seconds_count'),
      1,
      'one change had a trigger',
    );
    const latency = second.must('kubeproxy_network_programming_duration_seconds_sum');
    assert.ok(latency >= 0.5 && latency <= (clock.now() - trigger) / 1000, `latency ${latency}`);
    assert.equal(second.must('kubeproxy_network_programming_duration_seconds_bucket', { le: '0.25' }), 0);
    assert.equal(second.must('kubeproxy_network_programming_duration_seconds_bucket', { le: '300' }), 1);
    assert.equal(second.must('kubeproxy_sync_proxy_rules_endpoint_changes_total'), 5);
    assert.equal(second.must('kubeproxy_sync_proxy_rules_endpoint_changes_pending'), 0);
    assert.ok(second.must('kubeproxy_sync_proxy_rules_last_timestamp_seconds') >= lastSync1);
    assert.equal(
      second.must('kubeproxy_sync_proxy_rules_no_local_endpoints_total', { traffic_policy: 'external' }),
      0,
    );
    assert.equal(
      second.must('kubeproxy_sync_proxy_rules_no_local_endpoints_total', { traffic_policy: 'internal' }),
      1,
    );
    const kernel2 = kernelCounts(fake);
    assert.ok(kernel2.elements > kernel1.elements, 'a new backend means more elements');
    assert.equal(second.must('nftproxy_elements_programmed'), kernel2.elements);
    assert.equal(second.must('nftproxy_endpoints_programmed'), op.syncer.current!.stats().endpoints);
    assert.equal(
      second.must('nftproxy_endpoints_programmed'),
      first.must('nftproxy_endpoints_programmed') + 1,
      'one more backend of web',
    );
    assert.equal(second.must('nftproxy_transaction_bytes_count'), 2);
    assert.equal(second.must('nftproxy_transaction_bytes_sum'), r1.bytes + r2.bytes);

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
    const failures = third.must('kubeproxy_sync_proxy_rules_nftables_sync_failures_total');
    assert.ok(failures >= 1, `failures ${failures}`);
    assert.equal(syncsOf(third, 'partial', 'failure'), 1, 'the first failure is the partial sync');
    assert.equal(syncsOf(third, 'full', 'failure'), failures - 1, 'retries are full');
    assert.equal(third.must('kubeproxy_sync_proxy_rules_service_changes_pending'), 1);
    assert.equal(third.must('kubeproxy_sync_proxy_rules_endpoint_changes_pending'), 1);
    assert.equal(third.must('kubeproxy_sync_proxy_rules_service_changes_total'), 4);
    assert.equal(
      third.must('kubeproxy_sync_proxy_rules_duration_seconds_count'),
      2,
      'only successes are timed',
    );
    assert.equal(
      third.must('kubeproxy_sync_proxy_rules_last_timestamp_seconds'),
      second.must('kubeproxy_sync_proxy_rules_last_timestamp_seconds'),
    );
    assert.ok(
      third.must('kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds') >=
        second.must('kubeproxy_sync_proxy_rules_last_timestamp_seconds'),
      'the change was queued after the last sync',
    );
    assert.equal(third.must('nftproxy_services_programmed'), 3, 'the kernel still has the old rules');
    assert.equal(third.must('nftproxy_elements_programmed'), kernel2.elements);

    failing = false;
    await op.queue.idle();
    const fourth = await scrape();
    const errors = syncs.filter((s) => s instanceof Error).length;
    assert.equal(fourth.must('kubeproxy_sync_proxy_rules_nftables_sync_failures_total'), errors);
    assert.equal(syncsOf(fourth, 'partial', 'failure') + syncsOf(fourth, 'full', 'failure'), errors);
    assert.equal(syncsOf(fourth, 'full', 'success'), 2, 'the retry that worked was full');
    assert.equal(syncsOf(fourth, 'partial', 'success'), 1);
    assert.equal(fourth.must('kubeproxy_sync_proxy_rules_service_changes_pending'), 0);
    assert.equal(fourth.must('kubeproxy_sync_proxy_rules_endpoint_changes_pending'), 0);
    assert.equal(fourth.must('nftproxy_services_programmed'), 4);
    assert.equal(fourth.must('nftproxy_elements_programmed'), kernelCounts(fake).elements);
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

  it('serves /metrics, /healthz and /livez on one server when both bind addresses are the same', async () => {
    const lines: LogLine[] = [];
    op = new Operator({
      settings: testSettings({
        nodeName: 'n1',
        clusterCIDRs: CIDRS,
        healthzBindAddress: '127.0.0.1:0',
        metricsBindAddress: '127.0.0.1:0',
      }),
      source: new MemorySource([svc('web', '10.96.0.10')]),
      nft: new FakeBackend(),
      log: capturingLogger(lines),
    });
    await op.start();
    await op.queue.idle();
    assert.ok(op.metricsPort > 0 && op.metricsPort === op.healthPort, `${op.metricsPort} = ${op.healthPort}`);
    for (const path of ['/metrics', '/healthz', '/livez'])
      assert.equal((await fetch(`http://127.0.0.1:${op.metricsPort}${path}`)).status, 200, path);
    assert.deepEqual(
      lines.filter((l) => l.msg.startsWith('serving ')).map((l) => [l.msg, l.fields.port]),
      [
        ['serving /metrics', op.metricsPort],
        ['serving /healthz and /livez', op.metricsPort],
      ],
    );
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
    const now = await samplesOf(op.metrics.registry);
    assert.equal(now.must('nftproxy_syncs_total', { type: 'full', result: 'success' }), 1, 'still counted');
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
    const exported = new Set((await samplesOf(new ProxyMetrics({ since: 0 }).registry)).types.keys());
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
