/**
 * ProxyPolicies through the whole operator: the API source (real client library against the
 * stand-in API server), the store, the syncer on the kernel-like fake, and the status writer.
 * Invalid policies (fuzzed) must never reach the rules nor disturb other services, and must
 * be reported; policy changes must reach the kernel as incremental transactions.
 */
import assert from 'node:assert/strict';
import { Operator } from '../../src/controller/operator.js';
import { PolicyStatusWriter } from '../../src/controller/policy-status-writer.js';
import type { SyncResult } from '../../src/controller/syncer.js';
import { ApiSource } from '../../src/k8s/api-source.js';
import { parseManifests } from '../../src/k8s/manifests.js';
import { FakeBackend } from '../../src/nft/fake.js';
import { compareRulesets, type Ruleset } from '../../src/nft/ruleset.js';
import { compile } from '../../src/proxy/compile.js';
import { parseProxyConfig } from '../../src/proxy/config.js';
import { FakeApiServer } from '../support/apiserver.js';
import { eventually } from '../support/eventually.js';
import { testSettings } from '../support/operator.js';

const CIDRS = ['10.244.0.0/16'];

const svc = (name: string, ip: string, labels: Record<string, string> = {}) => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: 'default', labels },
  spec: { clusterIP: ip, ports: [{ port: 80 }] },
});
const eps = (name: string, ips: string[]) => ({
  apiVersion: 'discovery.k8s.io/v1',
  kind: 'EndpointSlice',
  metadata: { name: `${name}-1`, namespace: 'default', labels: { 'kubernetes.io/service-name': name } },
  addressType: 'IPv4',
  ports: [{ port: 8080 }],
  endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true } })),
});
type Spec = Record<string, unknown> & { scheduler: Record<string, unknown> };
const policy = (name: string, spec: Spec, creationTimestamp = '2026-01-01T00:00:00Z') => ({
  apiVersion: 'nftproxy.dev/v1alpha1',
  kind: 'ProxyPolicy',
  metadata: { name, namespace: 'default', creationTimestamp },
  spec,
});

/** The ruleset nftproxy should program for these objects. */
function expected(...objects: object[]): Ruleset {
  const { state } = parseManifests([
    { name: 'x', text: objects.map((o) => JSON.stringify(o)).join('\n---\n') },
  ]);
  return compile(state, parseProxyConfig({ nodeName: 'n1', clusterCIDRs: CIDRS })).ruleset;
}

/** Invalid mutations of a valid spec, each with the field it must be reported under. */
const MUTATIONS: [string, (s: Spec) => void][] = [
  ['spec.scheduler.type', (s) => (s.scheduler = { type: 'fastest' })],
  ['spec.masquerade', (s) => (s.masquerade = 'sometimes')],
  ['spec.sourceRanges.deny[0]', (s) => (s.sourceRanges = { deny: ['10.0.0.1/8'] })],
  [
    'spec.sessionAffinity.timeoutSeconds',
    (s) => (s.sessionAffinity = { type: 'ClientIP', timeoutSeconds: 0 }),
  ],
  ['spec.selector', (s) => (s.selector = {})],
  ['spec.scheduler.tableSize', (s) => (s.scheduler = { type: 'maglev', tableSize: 100 })],
  [
    'spec.scheduler.weights[0].weight',
    (s) => (s.scheduler = { type: 'weighted', weights: [{ match: { zone: 'a' }, weight: 101 }] }),
  ],
  ['spec.sourceRanges.allow[0]', (s) => (s.sourceRanges = { allow: ['not-a-cidr'] })],
  ['spec.scheduler', (s) => ((s as Record<string, unknown>).scheduler = 'maglev')],
];

/** A small deterministic generator (mulberry32), so a failure can be replayed. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

describe('ProxyPolicies through the operator', function () {
  this.timeout(60_000);
  let api: FakeApiServer;
  let fake: FakeBackend;
  let op: Operator | undefined;
  let syncs: (SyncResult | Error)[];

  beforeEach(async () => {
    api = new FakeApiServer();
    await api.start();
    fake = new FakeBackend();
    syncs = [];
  });

  afterEach(async () => {
    await op?.stop();
    op = undefined;
    await api.stop();
  });

  async function start(): Promise<Operator> {
    const settings = testSettings({
      nodeName: 'n1',
      clusterCIDRs: CIDRS,
      syncPeriod: '1s',
    });
    const source = new ApiSource({
      nodeName: 'n1',
      kubeConfig: api.kubeConfig(),
      backoff: { initialMs: 50, maxMs: 1000 },
    });
    const policyStatus = new PolicyStatusWriter({
      kubeConfig: api.kubeConfig(),
      nodeName: 'n1',
      sleep: async () => undefined,
    });
    op = new Operator({
      settings,
      source,
      nft: fake,
      policyStatus,
      onSync: (r) => syncs.push(r),
      backoff: { initialMs: 50, maxMs: 500 },
    });
    await op.start();
    return op;
  }

  const condition = (name: string, type: string) => {
    const status = api.get('ProxyPolicy', 'default', name)?.status as
      | {
          conditions?: { type: string; status: string; reason: string; message: string }[];
          servicesSelected?: number;
        }
      | undefined;
    return status?.conditions?.find((c) => c.type === type);
  };

  it('fuzzed invalid policies never reach the rules, leave other services alone, and say which field', async () => {
    const base = [
      svc('web', '10.96.0.10'),
      eps('web', ['10.244.1.1', '10.244.1.2']),
      svc('db', '10.96.0.11'),
      eps('db', ['10.244.1.3']),
    ];
    const good = policy('db-rr', { selector: { serviceNames: ['db'] }, scheduler: { type: 'roundRobin' } });
    for (const o of [...base, good]) api.apply(o);
    await start();
    const withGood = expected(...base, good);
    await eventually(async () => assert.deepEqual(compareRulesets(withGood, fake.snapshot()), []));
    await eventually(() => assert.equal(condition('db-rr', 'Programmed')?.status, 'True'));

    const rnd = random(20261122);
    for (let i = 0; i < 12; i++) {
      const spec: Spec = { selector: { serviceNames: ['web'] }, scheduler: { type: 'maglev' } };
      const fields: string[] = [];
      for (let n = 1 + Math.floor(rnd() * 2); n > 0; n--) {
        const [field, mutate] = MUTATIONS[Math.floor(rnd() * MUTATIONS.length)]!;
        mutate(spec);
        fields.push(field);
      }
      // The last mutation of a field wins; report only what the spec still holds.
      const name = `bad-${i}`;
      // Older than db-rr, so it would win for web if it were valid.
      api.apply(policy(name, spec, '2025-01-01T00:00:00Z'));
      await eventually(() => assert.equal(condition(name, 'Accepted')?.status, 'False', `${name} reported`));
      const accepted = condition(name, 'Accepted')!;
      assert.equal(accepted.reason, 'Invalid');
      const last = fields[fields.length - 1]!;
      assert.ok(
        accepted.message.includes(last),
        `${JSON.stringify(spec)}: "${accepted.message}" names ${last}`,
      );
      assert.notEqual(condition(name, 'Programmed')?.status, 'True');
      // Nothing of it in the kernel: the rules are those without the invalid policy.
      assert.deepEqual(
        compareRulesets(withGood, fake.snapshot()),
        [],
        `after ${name}: ${JSON.stringify(spec)}`,
      );
      api.delete('ProxyPolicy', 'default', name);
    }
    assert.ok(!syncs.some((s) => s instanceof Error), 'no sync failed');
    assert.equal(condition('db-rr', 'Accepted')?.status, 'True');
  });

  it('a policy change reaches the kernel as an incremental transaction', async () => {
    const base = [svc('web', '10.96.0.10'), eps('web', ['10.244.1.1', '10.244.1.2', '10.244.1.3'])];
    for (const o of base) api.apply(o);
    await start();
    await eventually(async () => assert.deepEqual(compareRulesets(expected(...base), fake.snapshot()), []));
    const before = syncs.length;
    const applied = fake.applied.length;

    const p = policy('web-rr', { selector: { serviceNames: ['web'] }, scheduler: { type: 'roundRobin' } });
    api.apply(p);
    await eventually(async () =>
      assert.deepEqual(compareRulesets(expected(...base, p), fake.snapshot()), []),
    );
    await eventually(() => assert.equal(condition('web-rr', 'Programmed')?.status, 'True'));
    const after = syncs.slice(before) as SyncResult[];
    assert.ok(after.length >= 1);
    for (const r of after) {
      assert.equal(r.full, false, 'partial sync');
      assert.equal(r.diff.tablesReplaced, 0, 'no table replaced');
    }
    // The transaction touched the service's dispatch element (and the shared pick chain),
    // not the table: no `delete table` / `flush table`.
    const txs = fake.applied.slice(applied);
    assert.ok(txs.length >= 1);
    const text = JSON.stringify(txs);
    assert.doesNotMatch(text, /"(delete|flush)":\{"table"/);
    assert.match(text, /pick-inc-3|numgen inc|"inc"/, 'the round-robin pick is in the transaction');

    // Removing the policy goes back to the default scheduler, incrementally too.
    const mark = syncs.length;
    api.delete('ProxyPolicy', 'default', 'web-rr');
    await eventually(async () => assert.deepEqual(compareRulesets(expected(...base), fake.snapshot()), []));
    for (const r of syncs.slice(mark) as SyncResult[]) assert.equal(r.full, false);
  });

  it('reports a conflict on the losing policy and programs the winner', async () => {
    const base = [svc('web', '10.96.0.10', { app: 'web' }), eps('web', ['10.244.1.1', '10.244.1.2'])];
    const byName = policy(
      'by-name',
      { selector: { serviceNames: ['web'] }, scheduler: { type: 'sourceHash' } },
      '2026-02-01T00:00:00Z',
    );
    const byLabel = policy(
      'by-label',
      { selector: { serviceSelector: { matchLabels: { app: 'web' } } }, scheduler: { type: 'roundRobin' } },
      '2025-01-01T00:00:00Z',
    );
    for (const o of [...base, byName, byLabel]) api.apply(o);
    await start();
    // serviceNames beats a label selector, even an older one.
    await eventually(async () =>
      assert.deepEqual(compareRulesets(expected(...base, byName), fake.snapshot()), []),
    );
    await eventually(() => assert.match(condition('by-label', 'Accepted')?.message ?? '', /by-name/));
    assert.equal(condition('by-name', 'Accepted')?.status, 'True');
    const status = api.get('ProxyPolicy', 'default', 'by-name')?.status as { servicesSelected?: number };
    assert.equal(status.servicesSelected, 1);
  });
});
