/**
 * Warning Events on Services, against a real kube-apiserver: two nodes see the same address
 * conflict, the cluster gets one Event, on the losing Service, with its uid.
 */
import assert from 'node:assert/strict';
import { ApiEventRecorder, EventReason } from '../../src/controller/events.js';
import { Operator } from '../../src/controller/operator.js';
import { ApiSource } from '../../src/k8s/api-source.js';
import { FakeBackend } from '../../src/nft/fake.js';
import { RealApiServer, requireRealApiServer } from '../support/kube-apiserver.js';
import { capturingLogger } from '../support/log.js';
import { createServer } from 'node:net';
import { ServiceHealthServer } from '../../src/controller/service-health.js';
import { testSettings } from '../support/operator.js';

interface EventList {
  items: {
    reason: string;
    message: string;
    type: string;
    involvedObject: { kind: string; namespace: string; name: string; uid: string };
    source: { component: string; host: string };
  }[];
}

describe('Service Events (real kube-apiserver)', function () {
  this.timeout(120_000);
  let api: RealApiServer;

  before(async function () {
    requireRealApiServer(this);
    api = await RealApiServer.start();
  });

  after(async () => {
    await api?.stop();
  });

  const events = async (namespace: string): Promise<EventList['items']> => {
    const r = await api.get(`/api/v1/namespaces/${namespace}/events`);
    return (JSON.parse(r.body) as EventList).items.filter((e) => e.source.component === 'nftproxy');
  };

  it('one AddressConflict Event for the Service whose external IP is another’s ClusterIP, from two nodes', async () => {
    for (const ns of ['shop', 'aaa'])
      await api.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } } as never);
    const web = (await api.apply({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'web', namespace: 'shop' },
      spec: { ports: [{ port: 80, protocol: 'TCP' }] },
    } as never)) as unknown as { spec: { clusterIP: string } };
    const ip = web.spec.clusterIP;
    const thief = (await api.apply({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'thief', namespace: 'aaa' },
      spec: { externalIPs: [ip], ports: [{ port: 80, protocol: 'TCP' }] },
    } as never)) as unknown as { metadata: { uid: string }; spec: Record<string, unknown> };

    const operators: Operator[] = [];
    try {
      for (const node of ['node1', 'node2']) {
        const log = capturingLogger();
        const settings = testSettings({
          nodeName: node,
        });
        const op = new Operator({
          settings,
          source: new ApiSource({ nodeName: node, kubeConfig: api.kubeConfig(), watchPolicies: false, log }),
          nft: new FakeBackend(),
          events: new ApiEventRecorder({ kubeConfig: api.kubeConfig(), nodeName: node, log }),
          log,
        });
        operators.push(op);
        await op.start();
      }
      const message = `${ip}:80/TCP is already used by Service shop/web (its ClusterIP); not programmed for this service`;
      await api.until(async () => (await events('aaa')).length > 0, 10_000, 'an Event posted');
      // Both nodes have posted (or found it posted) by now; still one Event.
      for (const op of operators) {
        assert.match(await op.metrics.scrape(), /^nftproxy_address_conflicts 1$/m);
        const owner = op.syncer.current!.units().find((u) => u.claim === `${ip} . tcp . 80`);
        assert.equal(owner?.service, 'shop/web', 'the ClusterIP keeps its address');
      }
      await new Promise((r) => setTimeout(r, 500));
      const posted = await events('aaa');
      assert.equal(posted.length, 1, JSON.stringify(posted));
      const [e] = posted;
      const { kind, namespace, name, uid } = e!.involvedObject;
      assert.deepEqual(
        { type: e!.type, reason: e!.reason, message: e!.message, on: { kind, namespace, name, uid } },
        {
          type: 'Warning',
          reason: EventReason.addressConflict,
          message,
          on: { kind: 'Service', namespace: 'aaa', name: 'thief', uid: thief.metadata.uid },
        },
      );
      assert.deepEqual(await events('shop'), [], 'nothing about the winner');

      // Resolved: the conflict count goes back to 0.
      await api.apply({ ...thief, spec: { ...thief.spec, externalIPs: [] } } as never);
      await api.until(
        async () => {
          for (const op of operators)
            if (!/^nftproxy_address_conflicts 0$/m.test(await op.metrics.scrape())) return false;
          return true;
        },
        10_000,
        'conflict gone',
      );
    } finally {
      for (const op of operators) await op.stop();
    }
  });

  it('FailedToStartServiceHealthcheck when the health check node port is taken', async () => {
    await api.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'lb' } } as never);
    const svc = (await api.apply({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'local', namespace: 'lb' },
      spec: { type: 'LoadBalancer', externalTrafficPolicy: 'Local', ports: [{ port: 80, protocol: 'TCP' }] },
    } as never)) as unknown as { spec: { healthCheckNodePort: number } };
    const port = svc.spec.healthCheckNodePort;
    assert.ok(port > 0, 'the server allocated a health check node port');
    const squatter = createServer();
    await new Promise<void>((resolve) => squatter.listen(port, '127.0.0.1', resolve));
    const log = capturingLogger();
    const settings = testSettings({
      nodeName: 'node1',
    });
    const serviceHealth = new ServiceHealthServer({
      proxyHealthy: () => true,
      hosts: () => ['127.0.0.1'],
      log,
    });
    const op = new Operator({
      settings,
      source: new ApiSource({ nodeName: 'node1', kubeConfig: api.kubeConfig(), watchPolicies: false, log }),
      nft: new FakeBackend(),
      serviceHealth,
      events: new ApiEventRecorder({ kubeConfig: api.kubeConfig(), nodeName: 'node1', log }),
      log,
    });
    try {
      await op.start();
      await api.until(async () => (await events('lb')).length > 0, 10_000, 'an Event posted');
      const [e] = await events('lb');
      assert.equal(e!.reason, EventReason.healthCheckFailed);
      assert.equal(e!.involvedObject.name, 'local');
      assert.match(e!.message, new RegExp(`127\\.0\\.0\\.1:${port}: .*EADDRINUSE`));
    } finally {
      await op.stop();
      await serviceHealth.close();
      await new Promise((r) => squatter.close(r));
    }
  });

  it('ProxyPolicy Events too: one per object, reason, message and revision, from any number of nodes', async () => {
    await api.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'pp' } } as never);
    const policy = {
      apiVersion: 'nftproxy.dev/v1alpha1',
      kind: 'ProxyPolicy',
      namespace: 'pp',
      name: 'weights',
      uid: '0b7f1c2e-1111-4c1b-9f43-0c2b7a9d1e11',
      resourceVersion: '7',
    };
    const nodes = ['node-a', 'node-b', 'node-c'].map(
      (nodeName) => new ApiEventRecorder({ kubeConfig: api.kubeConfig(), nodeName }),
    );
    const message = 'spec.scheduler.weights[0].weight: must be from 0 to 100, not 101';
    await Promise.all(nodes.map((n) => n.warn({ ...policy, revision: 1 }, 'Invalid', message)));
    let posted = await events('pp');
    assert.equal(posted.length, 1, JSON.stringify(posted));
    assert.deepEqual(
      { reason: posted[0]!.reason, kind: posted[0]!.involvedObject.kind, uid: posted[0]!.involvedObject.uid },
      { reason: 'Invalid', kind: 'ProxyPolicy', uid: policy.uid },
    );
    // The same problem again in a later generation is news; the same one again is not.
    await Promise.all(nodes.map((n) => n.warn({ ...policy, revision: 2 }, 'Invalid', message)));
    await nodes[0]!.warn({ ...policy, revision: 1 }, 'Invalid', message);
    posted = await events('pp');
    assert.equal(posted.length, 2, JSON.stringify(posted.map((e) => e.message)));
  });
});
