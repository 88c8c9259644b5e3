/**
 * The API source with the real client library (@kubernetes/client-node) against a stand-in
 * API server speaking list/watch, driving the operator. The nft side is the kernel-like
 * fake, and for the outage test a real table in a network namespace.
 */
import assert from 'node:assert/strict';
import { Operator } from '../../src/controller/operator.js';
import { ApiSource } from '../../src/k8s/api-source.js';
import { compile } from '../../src/proxy/compile.js';
import { parseProxyConfig } from '../../src/proxy/config.js';
import { ExecBackend } from '../../src/nft/exec.js';
import { FakeBackend } from '../../src/nft/fake.js';
import type { NftBackend, NftReader } from '../../src/nft/backend.js';
import { compareRulesets, emptyRuleset, type Ruleset, tableKey } from '../../src/nft/ruleset.js';
import { parseManifests } from '../../src/k8s/manifests.js';
import type { SourceSink } from '../../src/k8s/source.js';
import type { Logger } from '../../src/telemetry/log.js';
import { FakeApiServer } from '../support/apiserver.js';
import { capturingLogger } from '../support/log.js';
import { requireKernel, Netns } from '../support/netns.js';
import { eventually } from '../support/eventually.js';
import { ManualClock } from '../support/clock.js';
import type { Clock } from '../../src/clock.js';
import { testSettings } from '../support/operator.js';

const CIDRS = ['10.244.0.0/16'];
/** What the API source lists and watches (the stand-in serves them all). */
const RESOURCES = ['Service', 'EndpointSlice', 'Node', 'ServiceCIDR', 'ProxyPolicy'];

const svc = (name: string, ip: string, port = 80) => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: 'default' },
  spec: { clusterIP: ip, ports: [{ port }] },
});
const eps = (name: string, ips: string[]) => ({
  apiVersion: 'discovery.k8s.io/v1',
  kind: 'EndpointSlice',
  metadata: { name: `${name}-1`, namespace: 'default', labels: { 'kubernetes.io/service-name': name } },
  addressType: 'IPv4',
  ports: [{ port: 8080 }],
  endpoints: ips.map((ip) => ({ addresses: [ip] })),
});

/** The ruleset nftproxy should program for these objects. */
function expected(...objects: object[]): Ruleset {
  const { state } = parseManifests([
    { name: 'x', text: objects.map((o) => JSON.stringify(o)).join('\n---\n') },
  ]);
  return compile(state, parseProxyConfig({ nodeName: 'n1', clusterCIDRs: CIDRS })).ruleset;
}

async function readRuleset(nft: NftReader): Promise<Ruleset> {
  const r = emptyRuleset();
  for (const f of ['ip', 'ip6'] as const) {
    const t = await nft.listTable(f, 'nftproxy');
    if (t) r.tables.set(tableKey(f, 'nftproxy'), t);
  }
  return r;
}

function operatorFor(
  api: FakeApiServer,
  nft: NftBackend,
  opts: {
    watchdogMs?: number;
    pageSize?: number;
    backoff?: { initialMs: number; maxMs: number };
    probeIntervalMs?: number;
    log?: Logger;
    /** The source's time (backoff, probes, watchdog); the operator keeps the real one. */
    clock?: Clock;
  } = {},
) {
  const settings = testSettings({
    nodeName: 'n1',
    clusterCIDRs: CIDRS,
    syncPeriod: '1s',
  });
  const source = new ApiSource({
    nodeName: 'n1',
    kubeConfig: api.kubeConfig(),
    backoff: opts.backoff ?? { initialMs: 50, maxMs: 1000 },
    watchdogMs: opts.watchdogMs ?? 60_000,
    ...(opts.pageSize ? { pageSize: opts.pageSize } : {}),
    ...(opts.probeIntervalMs !== undefined ? { probeIntervalMs: opts.probeIntervalMs } : {}),
    ...(opts.log ? { log: opts.log } : {}),
    ...(opts.clock ? { clock: opts.clock } : {}),
  });
  return new Operator({ settings, source, nft, backoff: { initialMs: 50, maxMs: 500 } });
}

describe('API source (client-node against a stand-in API server)', function () {
  this.timeout(60_000);
  let api: FakeApiServer;
  let fake: FakeBackend;
  let op: Operator;

  beforeEach(async () => {
    api = new FakeApiServer();
    await api.start();
    fake = new FakeBackend();
  });

  afterEach(async () => {
    await op?.stop();
    await api.stop();
  });

  const matches =
    (...objects: object[]) =>
    async () =>
      assert.deepEqual(compareRulesets(expected(...objects), await readRuleset(fake)), []);

  it('programs nothing before every resource has been listed once', async () => {
    // Services list fine, EndpointSlices do not (yet): programming now would reject all
    // traffic to services that do have endpoints.
    api.apply(svc('web', '10.96.0.10'));
    api.apply(eps('web', ['10.244.1.1']));
    api.failLists.add('EndpointSlice');
    op = operatorFor(api, fake);
    const started = op.start();
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(fake.applied.length, 0, 'no transaction before EndpointSlices are listed');
    assert.ok(api.requests.filter((r) => r === 'list EndpointSlice').length >= 2, 'the list was retried');
    api.failLists.clear();
    await started;
    await eventually(matches(svc('web', '10.96.0.10'), eps('web', ['10.244.1.1'])));
  });

  it('carries creates, changes and deletes of Services and EndpointSlices to the rules', async () => {
    op = operatorFor(api, fake);
    await op.start();
    api.apply(svc('web', '10.96.0.10'));
    api.apply(eps('web', ['10.244.1.1', '10.244.1.2']));
    await eventually(matches(svc('web', '10.96.0.10'), eps('web', ['10.244.1.1', '10.244.1.2'])));
    api.apply(eps('web', ['10.244.1.3']));
    api.apply(svc('db', '10.96.0.20', 5432));
    await eventually(
      matches(svc('web', '10.96.0.10'), eps('web', ['10.244.1.3']), svc('db', '10.96.0.20', 5432)),
    );
    api.delete('EndpointSlice', 'default', 'web-1');
    api.delete('Service', 'default', 'db');
    await eventually(matches(svc('web', '10.96.0.10')));
  });

  it('takes service CIDRs from ServiceCIDR objects as they come and go', async () => {
    const range = (name: string, cidrs: string[]) => ({
      apiVersion: 'networking.k8s.io/v1',
      kind: 'ServiceCIDR',
      metadata: { name },
      spec: { cidrs },
    });
    api.apply(svc('web', '10.96.0.10'));
    api.apply(range('kubernetes', ['10.96.0.0/16']));
    op = operatorFor(api, fake);
    await op.start();
    await eventually(matches(svc('web', '10.96.0.10'), range('kubernetes', ['10.96.0.0/16'])));
    const cidrs = async () =>
      [...(await readRuleset(fake)).tables.get('ip nftproxy')!.sets.get('service-cidrs')!.elems.keys()]
        .length;
    assert.equal(await cidrs(), 1, 'the ServiceCIDR is programmed');
    api.apply(range('extra', ['10.100.0.0/16']));
    await eventually(
      matches(
        svc('web', '10.96.0.10'),
        range('kubernetes', ['10.96.0.0/16']),
        range('extra', ['10.100.0.0/16']),
      ),
    );
    api.delete('ServiceCIDR', '', 'kubernetes');
    api.delete('ServiceCIDR', '', 'extra');
    await eventually(matches(svc('web', '10.96.0.10')));
    assert.equal(await cidrs(), 0, 'removed with its objects');
  });

  it('survives a dropped watch, and a 410 Gone with a relist that notices deletions, without a flush', async () => {
    api.apply(svc('web', '10.96.0.10'));
    api.apply(svc('db', '10.96.0.20'));
    op = operatorFor(api, fake);
    await op.start();
    await eventually(matches(svc('web', '10.96.0.10'), svc('db', '10.96.0.20')));
    api.dropWatches();
    api.apply(eps('web', ['10.244.1.1']));
    await eventually(matches(svc('web', '10.96.0.10'), svc('db', '10.96.0.20'), eps('web', ['10.244.1.1'])));

    // Down for a moment; meanwhile history is compacted, so the next watch gets 410 Gone.
    await api.down();
    api.delete('Service', 'default', 'db');
    api.apply(eps('web', ['10.244.1.2']));
    api.compact();
    await api.up();
    await eventually(matches(svc('web', '10.96.0.10'), eps('web', ['10.244.1.2'])));
    assert.ok(api.requests.filter((r) => r === 'list Service').length >= 2, 'relisted after 410');
    for (const tx of fake.applied.slice(1)) {
      assert.ok(
        !tx.commands.some((c) => 'delete' in c && 'table' in c.delete),
        'never replaced or flushed a table',
      );
    }
  });

  it('lists in pages, and a relist across pages removes exactly what went away', async () => {
    const services = Array.from({ length: 23 }, (_, i) =>
      svc(`s${String(i).padStart(2, '0')}`, `10.96.1.${i + 1}`),
    );
    for (const s of services) api.apply(s);
    op = operatorFor(api, fake, { pageSize: 5 });
    await op.start();
    await eventually(matches(...services));
    assert.ok(api.pages >= 5, `23 services in pages of 5: ${api.pages} pages`);
    await api.down();
    api.delete('Service', 'default', 's07');
    api.delete('Service', 'default', 's22');
    api.compact();
    await api.up();
    await eventually(matches(...services.filter((s) => !['s07', 's22'].includes(s.metadata.name))));
  });

  it('restarts a watch that went silent, and leaves no watch open when stopped', async () => {
    op = operatorFor(api, fake, { watchdogMs: 500 });
    await op.start();
    api.silenceWatches();
    api.apply(svc('web', '10.96.0.10'));
    await eventually(matches(svc('web', '10.96.0.10')), 15_000);
    await op.stop();
    await eventually(async () => assert.equal(api.openWatches, 0));
  });

  it('never runs two starts of one informer when the API is slower than the watchdog', async () => {
    api.listDelayMs = 1500;
    op = operatorFor(api, fake, { watchdogMs: 500 });
    await op.start();
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(api.openWatches, RESOURCES.length, 'one watch per resource');
    assert.equal(
      api.requests.filter((r) => r.startsWith('list')).length,
      RESOURCES.length,
      'one list per resource',
    );
    await op.stop();
    await eventually(async () => assert.equal(api.openWatches, 0));
  });
});

/** `nftproxy_watch_*{resource="KIND"}` samples of the operator's /metrics text. */
async function watchSamples(op: Operator, metric: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  const re = new RegExp(`^nftproxy_watch_${metric}\\{resource="(\\w+)"\\} (\\S+)$`, 'gm');
  for (const m of (await op.metrics.scrape()).matchAll(re)) out.set(m[1]!, Number(m[2]));
  return out;
}

describe('API source: back after an outage', function () {
  this.timeout(60_000);
  let api: FakeApiServer;
  let fake: FakeBackend;
  let op: Operator | undefined;

  beforeEach(async () => {
    api = new FakeApiServer();
    await api.start();
    fake = new FakeBackend();
  });

  afterEach(async () => {
    await op?.stop();
    op = undefined;
    await api.stop();
  });

  /**
   * Starts with `web` programmed, takes the API server down until every watch waits its
   * second backoff (2 s, then 4 s, on the source's manual clock), and returns with a new
   * endpoint waiting on the server.
   */
  async function outage(clock: ManualClock, probeIntervalMs: number, log?: Logger): Promise<Operator> {
    api.apply(svc('web', '10.96.0.10'));
    api.apply(eps('web', ['10.244.1.1']));
    const o = (op = operatorFor(api, fake, {
      backoff: { initialMs: 2000, maxMs: 60_000 },
      probeIntervalMs,
      clock,
      ...(log ? { log } : {}),
    }));
    await o.start();
    await eventually(async () =>
      assert.deepEqual(
        compareRulesets(
          expected(svc('web', '10.96.0.10'), eps('web', ['10.244.1.1'])),
          await readRuleset(fake),
        ),
        [],
      ),
    );
    assert.deepEqual(
      [...(await watchSamples(o, 'connected')).values()],
      RESOURCES.map(() => 1),
      'every resource watching',
    );
    await api.down();
    await eventually(async () => {
      await clock.advance(250);
      const failures = await watchSamples(o, 'failures_total');
      assert.equal(failures.size, RESOURCES.length);
      for (const [resource, n] of failures) assert.ok(n >= 2, `${resource}: ${n} failures`);
    }, 10_000);
    assert.deepEqual(
      [...(await watchSamples(o, 'connected')).values()],
      RESOURCES.map(() => 0),
      'none watching',
    );
    api.apply(eps('web', ['10.244.1.1', '10.244.1.2']));
    return o;
  }

  const after = () => expected(svc('web', '10.96.0.10'), eps('web', ['10.244.1.1', '10.244.1.2']));
  const programmed = async () => compareRulesets(after(), await readRuleset(fake)).length === 0;

  it('reconnects every waiting watch once /readyz answers again, not after the rest of its backoff', async () => {
    const log = capturingLogger();
    const { lines } = log;
    const clock = new ManualClock();
    const o = await outage(clock, 100, log);
    // Back, but still starting: /readyz says 500, and that is not an answer.
    api.notReady = true;
    await api.up();
    const probes = api.readyzRequests;
    for (let i = 0; i < 10; i++) await clock.advance(100);
    await eventually(() => assert.ok(api.readyzRequests > probes, 'kept asking /readyz'));
    assert.equal(await programmed(), false, 'no reconnect while /readyz fails');
    api.notReady = false;
    const ready = clock.now();
    // Each watch still has over 3 s of its 4 s backoff to wait: only the probe can wake it.
    await eventually(async () => {
      await clock.advance(100);
      assert.ok(await programmed(), 'programmed');
    });
    const tookMs = clock.now() - ready;
    assert.ok(tookMs < 1500, `programmed ${tookMs} ms after /readyz answered`);
    assert.deepEqual(
      [...(await watchSamples(o, 'connected')).values()],
      RESOURCES.map(() => 1),
      'all watching again',
    );
    const lastEvent = await watchSamples(o, 'last_event_timestamp_seconds');
    for (const [resource, t] of lastEvent) assert.ok(t * 1000 >= ready, `${resource} heard from at ${t}`);
    const msgs = lines.map((l) => l.msg);
    assert.ok(msgs.includes('API server does not answer; watching for its return'), msgs.join('; '));
    assert.ok(msgs.includes('API server answers again; reconnecting watches'), msgs.join('; '));
    const resumed = lines.find((l) => l.msg === 'watches resumed');
    assert.ok(resumed, msgs.join('; '));
    assert.ok(
      (resumed.fields.afterMs as number) >= 2000,
      `resumed after ${String(resumed.fields.afterMs)} ms`,
    );
  });

  it('without probing (interval 0), a watch waits out its backoff', async () => {
    const clock = new ManualClock();
    await outage(clock, 0);
    await api.up();
    const up = clock.now();
    for (let i = 0; i < 15; i++) await clock.advance(100);
    await new Promise((r) => setTimeout(r, 100)); // what a wrong wake-up would start, finishes
    assert.equal(await programmed(), false, 'still waiting 1.5 s after the server came back');
    assert.equal(api.readyzRequests, 0, 'never asked /readyz');
    await eventually(async () => {
      await clock.advance(250);
      assert.ok(await programmed(), 'programmed');
    });
    const waited = clock.now() - up;
    assert.ok(
      waited >= 1500 && waited <= 5000,
      `programmed ${waited} ms after the return: the backoff's end`,
    );
  });

  it('a server that answers but refuses a list keeps its backoff: the probe wakes only on a return', async () => {
    api.failLists.add('Service');
    op = operatorFor(api, fake, { backoff: { initialMs: 300, maxMs: 60_000 }, probeIntervalMs: 50 });
    const started = op.start();
    await new Promise((r) => setTimeout(r, 2000));
    // Backoff 300, 600, 1200 ms: at most four lists in 2 s, where waking at every probe would make ~40.
    const lists = api.requests.filter((r) => r === 'list Service').length;
    assert.ok(lists >= 2 && lists <= 4, `${lists} lists of Services in 2 s`);
    assert.ok(api.readyzRequests >= 10, `${api.readyzRequests} probes`);
    api.failLists.delete('Service');
    await started;
  });
});

describe('API source: ProxyPolicies', function () {
  this.timeout(30_000);
  let api: FakeApiServer;
  let source: ApiSource | undefined;

  beforeEach(async () => {
    api = new FakeApiServer();
    await api.start();
  });

  afterEach(async () => {
    await source?.stop();
    source = undefined;
    await api.stop();
  });

  const policy = (name: string) => ({
    apiVersion: 'nftproxy.dev/v1alpha1',
    kind: 'ProxyPolicy',
    metadata: { name, namespace: 'default' },
    spec: { selector: { serviceNames: ['web'] }, scheduler: { type: 'random' } },
  });

  /** What the sink was told, as `upsert KIND ns/name` and `remove KIND ns/name`. */
  function recorder() {
    const calls: string[] = [];
    const sink: SourceSink = {
      upsert: (p) => calls.push(`upsert ${p.kind} ${p.object.metadata.namespace}/${p.object.metadata.name}`),
      remove: (kind, ns, name) => calls.push(`remove ${kind} ${ns}/${name}`),
      diagnostics: () => undefined,
    };
    return { calls, sink };
  }

  const told = (calls: string[], name: string) => calls.includes(`upsert ProxyPolicy default/${name}`);

  const start = async (sink: SourceSink, opts: { log?: Logger; watchPolicies?: boolean } = {}) => {
    source = new ApiSource({
      nodeName: 'n1',
      kubeConfig: api.kubeConfig(),
      backoff: { initialMs: 50, maxMs: 1000 },
      missingCrdRetryMs: 200,
      ...opts,
    });
    await source.start(sink);
  };

  it('lists and watches ProxyPolicies and passes them to the sink as that kind', async () => {
    const { calls, sink } = recorder();
    api.apply(policy('listed'));
    await start(sink);
    assert.ok(told(calls, 'listed'), calls.join(', '));
    api.apply(policy('watched'));
    await eventually(() => assert.ok(told(calls, 'watched'), calls.join(', ')));
    const mark = calls.length;
    api.delete('ProxyPolicy', 'default', 'listed');
    await eventually(() =>
      assert.ok(calls.slice(mark).includes('remove ProxyPolicy default/listed'), calls.join(', ')),
    );
    assert.ok(api.requests.includes('watch ProxyPolicy'));
  });

  it('without the CRD: warns once, counts as synced, and picks the CRD up once installed', async () => {
    const { calls, sink } = recorder();
    const warnings: string[] = [];
    const log: Logger = { debug() {}, info() {}, error() {}, warn: (msg) => warnings.push(msg) };
    api.notInstalled.add('ProxyPolicy');
    api.apply(svc('web', '10.96.0.10'));
    await start(sink, { log });
    assert.ok(calls.includes('upsert Service default/web'), 'the rest is listed');
    await new Promise((r) => setTimeout(r, 700));
    assert.ok(api.requests.filter((r) => r === 'list ProxyPolicy').length >= 3, 'looked again');
    assert.deepEqual(warnings, ['ProxyPolicy CRD not installed; policies ignored']);

    api.notInstalled.delete('ProxyPolicy');
    api.apply(policy('p1'));
    await eventually(() => assert.ok(told(calls, 'p1'), calls.join(', ')));
    await eventually(() => assert.equal(api.openWatches, RESOURCES.length));
  });

  it('CRD deleted while running: its policies go, the rest keeps watching, and it comes back', async () => {
    const { calls, sink } = recorder();
    const warnings: string[] = [];
    const log: Logger = { debug() {}, info() {}, error() {}, warn: (msg) => warnings.push(msg) };
    api.apply(svc('web', '10.96.0.10'));
    api.apply(policy('p1'));
    await start(sink, { log });
    assert.ok(told(calls, 'p1'));

    // Deleting a CRD deletes its objects and ends its watches; its API then answers 404.
    api.notInstalled.add('ProxyPolicy');
    api.delete('ProxyPolicy', 'default', 'p1');
    api.dropWatches();
    await eventually(() => assert.ok(calls.includes('remove ProxyPolicy default/p1'), calls.join(', ')));
    assert.deepEqual(warnings, ['ProxyPolicy CRD not installed; policies ignored']);
    await eventually(() =>
      assert.equal(api.openWatches, RESOURCES.length - 1, 'the other kinds watch again'),
    );
    api.apply(svc('api', '10.96.0.11'));
    await eventually(() => assert.ok(calls.includes('upsert Service default/api'), calls.join(', ')));
    assert.ok(!calls.includes('remove Service default/web'), 'services untouched');

    api.notInstalled.delete('ProxyPolicy');
    api.apply(policy('p2'));
    await eventually(() => assert.ok(told(calls, 'p2'), calls.join(', ')));
    await eventually(() => assert.equal(api.openWatches, RESOURCES.length));
    assert.ok(!told(calls.slice(calls.indexOf('remove ProxyPolicy default/p1')), 'p1'), 'p1 stays gone');
  });

  it('does not touch ProxyPolicies when told not to', async () => {
    const { sink } = recorder();
    await start(sink, { watchPolicies: false });
    assert.equal(api.openWatches, RESOURCES.length - 1);
    assert.ok(!api.requests.some((r) => r.includes('ProxyPolicy')));
  });
});

describe('@kernel API source through a 30 s outage', function () {
  this.timeout(120_000);

  it('keeps the rules in the kernel throughout, then applies what changed meanwhile', async function () {
    requireKernel(this);
    const api = new FakeApiServer();
    await api.start();
    const ns = await Netns.create('api');
    const nft = new ExecBackend({ command: ns.nftCommand });
    // The source waits on a manual clock: 30 s of outage (retries, backoff) in well under one.
    const clock = new ManualClock();
    let op: Operator | undefined;
    try {
      api.apply(svc('web', '10.96.0.10'));
      api.apply(eps('web', ['10.244.1.1']));
      op = operatorFor(api, nft, { clock });
      await op.start();
      const before = expected(svc('web', '10.96.0.10'), eps('web', ['10.244.1.1']));
      await eventually(async () => assert.deepEqual(compareRulesets(before, await readRuleset(nft)), []));

      await api.down();
      api.apply(eps('web', ['10.244.1.1', '10.244.1.2']));
      const failures = async () =>
        [...(await watchSamples(op!, 'failures_total')).values()].reduce((a, b) => a + b, 0);
      const start = clock.now();
      while (clock.now() - start < 30_000) {
        await clock.advance(2000);
        assert.deepEqual(
          compareRulesets(before, await readRuleset(nft)),
          [],
          'rules intact during the outage',
        );
      }
      const failed = await failures();
      assert.ok(failed >= 2 * RESOURCES.length, `${failed} failed lists and watches in the outage`);
      await api.up();
      const after = expected(svc('web', '10.96.0.10'), eps('web', ['10.244.1.1', '10.244.1.2']));
      await eventually(async () => {
        await clock.advance(500);
        assert.deepEqual(compareRulesets(after, await readRuleset(nft)), []);
      }, 20_000);
    } finally {
      await op?.stop();
      await api.stop();
      await ns.delete();
    }
  });
});
