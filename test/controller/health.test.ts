/**
 * /livez and /healthz as kube-proxy answers them: the sync loop's liveness, and readiness for
 * load balancer traffic (rules programmed, node not draining).
 */
import assert from 'node:assert/strict';
import { healthRoutes, type HealthSource } from '../../src/controller/health.js';
import { RouteServer } from '../../src/net/http.js';
import { parseResource } from '../../src/k8s/parse.js';
import type { Node } from '../../src/k8s/types.js';
import { Operator } from '../../src/controller/operator.js';
import { ApiSource } from '../../src/k8s/api-source.js';
import { FakeBackend } from '../../src/nft/fake.js';
import { RealApiServer, requireRealApiServer } from '../support/kube-apiserver.js';
import { testSettings } from '../support/operator.js';

const T0 = Date.parse('2026-12-03T10:00:00Z');

async function get(port: number, path: string) {
  const r = await fetch(`http://127.0.0.1:${port}${path}`);
  return {
    status: r.status,
    type: r.headers.get('content-type'),
    nosniff: r.headers.get('x-content-type-options'),
    body: (await r.json()) as Record<string, unknown>,
  };
}

describe('health endpoints', () => {
  const src: HealthSource = { lastSuccessAt: undefined, pendingSince: undefined };
  let now = T0;
  let draining: string | undefined;
  let server: RouteServer;
  let port: number;

  before(async () => {
    server = new RouteServer(healthRoutes(src, 60_000, { now: () => now }, () => draining));
    port = await server.listen('127.0.0.1:0', 'healthz');
  });
  after(() => server.close());
  beforeEach(() => {
    src.lastSuccessAt = undefined;
    src.pendingSince = undefined;
    now = T0;
    draining = undefined;
  });

  it('answers JSON with nosniff on both', async () => {
    for (const path of ['/livez', '/healthz']) {
      const r = await get(port, path);
      assert.equal(r.type, 'application/json', path);
      assert.equal(r.nosniff, 'nosniff', path);
      assert.equal(r.body.currentTime, '2026-12-03T10:00:00.000Z', path);
    }
  });

  it('before the first sync: live, not ready', async () => {
    src.pendingSince = T0 - 1000;
    assert.equal((await get(port, '/livez')).status, 200);
    const h = await get(port, '/healthz');
    assert.equal(h.status, 503);
    assert.deepEqual(h.body.reasons, ['no successful sync yet']);
  });

  it('a change waiting longer than 2x the sync period fails /livez too, so a stuck loop is restarted', async () => {
    src.lastSuccessAt = T0 - 120_000;
    src.pendingSince = T0 - 61_000;
    const live = await get(port, '/livez');
    assert.equal(live.status, 503);
    assert.deepEqual(live.body.reasons, ['a change has waited 61 s to be applied (limit 60 s)']);
    assert.equal(live.body.lastUpdated, '2026-12-03T09:58:00.000Z');
    assert.equal((await get(port, '/healthz')).status, 503);
    src.pendingSince = T0 - 59_000;
    assert.equal((await get(port, '/livez')).status, 200);
    assert.equal((await get(port, '/healthz')).status, 200);
  });

  it('a draining node is live but not eligible: /healthz 503 with nodeEligible false', async () => {
    src.lastSuccessAt = T0 - 1000;
    assert.equal((await get(port, '/healthz')).body.nodeEligible, true);
    draining = 'tainted ToBeDeletedByClusterAutoscaler (the cluster autoscaler is removing it)';
    const h = await get(port, '/healthz');
    assert.equal(h.status, 503);
    assert.equal(h.body.nodeEligible, false);
    assert.deepEqual(h.body.reasons, [`node ${draining}`]);
    assert.equal((await get(port, '/livez')).status, 200);
  });
});

describe('Node draining (KEP-3836)', () => {
  const nodeOf = (metadata: Record<string, unknown>, spec: Record<string, unknown> = {}) =>
    parseResource({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'n1', ...metadata }, spec }).parsed!
      .object as Node;

  it('is draining while being deleted, or tainted for removal by the cluster autoscaler', () => {
    assert.equal(nodeOf({}).draining, undefined);
    assert.equal(
      nodeOf({ deletionTimestamp: '2026-12-03T10:00:00Z' }).draining,
      'being deleted since 2026-12-03T10:00:00Z',
    );
    assert.match(
      nodeOf({}, { taints: [{ key: 'ToBeDeletedByClusterAutoscaler', effect: 'NoSchedule' }] }).draining!,
      /^tainted ToBeDeletedByClusterAutoscaler/,
    );
    assert.equal(
      nodeOf({}, { taints: [{ key: 'node.kubernetes.io/unschedulable', effect: 'NoSchedule' }] }).draining,
      undefined,
    );
  });
});

describe('Node draining on a real kube-apiserver', function () {
  this.timeout(120_000);
  let api: RealApiServer;
  let op: Operator | undefined;

  before(async function () {
    requireRealApiServer(this);
    api = await RealApiServer.start();
  });
  after(async () => {
    await op?.stop();
    await api?.stop();
  });

  it('a tainted, then deleting Node makes /healthz 503 with nodeEligible false; /livez stays 200', async () => {
    const node = (await api.apply({
      apiVersion: 'v1',
      kind: 'Node',
      // A finalizer keeps it, with a deletionTimestamp, once deleted (as a drain does).
      metadata: { name: 'node1', finalizers: ['nftproxy.dev/test'] },
    } as never)) as unknown as Record<string, unknown>;
    const settings = testSettings({
      nodeName: 'node1',
      healthzBindAddress: '127.0.0.1:0',
    });
    op = new Operator({
      settings,
      source: new ApiSource({ nodeName: 'node1', kubeConfig: api.kubeConfig(), watchPolicies: false }),
      nft: new FakeBackend(),
    });
    await op.start();
    const port = op.healthPort;
    await api.until(
      async () => (await get(port, '/healthz')).status === 200,
      10_000,
      'healthy after the first sync',
    );

    const tainted: Record<string, unknown> = await api.apply({
      ...node,
      spec: {
        taints: [{ key: 'ToBeDeletedByClusterAutoscaler', value: '1733220000', effect: 'NoSchedule' }],
      },
    } as never);
    await api.until(
      async () => (await get(port, '/healthz')).status === 503,
      10_000,
      'not eligible once tainted',
    );
    assert.equal((await get(port, '/healthz')).body.nodeEligible, false);

    await api.apply({ ...tainted, spec: {} } as never);
    await api.until(async () => (await get(port, '/healthz')).status === 200, 10_000, 'eligible again');

    await api.delete(node as never);
    await api.until(
      async () => (await get(port, '/healthz')).status === 503,
      10_000,
      'not eligible while deleting',
    );
    const h = await get(port, '/healthz');
    assert.equal(h.body.nodeEligible, false);
    assert.match((h.body.reasons as string[])[0]!, /^node being deleted since /);
    assert.equal((await get(port, '/livez')).status, 200, 'the process itself is fine');
    // Let it go.
    const deleting = JSON.parse((await api.get('/api/v1/nodes/node1')).body) as { metadata: object };
    await api.apply({ ...deleting, metadata: { ...deleting.metadata, finalizers: [] } } as never);
  });
});
