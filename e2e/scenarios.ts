/**
 * The end-to-end scenarios, written once and run against every cluster kind (a kind cluster
 * with Docker, network namespaces everywhere else). Each scenario creates its own Service,
 * waits until traffic shows the rules are in place, then asserts on where connections went
 * and what source address the pods saw.
 */
import assert from 'node:assert/strict';
import { type ProbeResult, tally } from '../test/support/netns.js';
import { type E2ECluster, eventually, NAMESPACE, type ServiceManifest } from './cluster.js';

const LB_IP = '192.0.2.80';

function service(name: string, spec: Partial<ServiceManifest['spec']> = {}): ServiceManifest {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: NAMESPACE },
    spec: {
      selector: { app: 'echo' },
      ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }],
      ...spec,
    },
  };
}

const servers = (results: ProbeResult[]) => new Set(results.filter((r) => r.ok).map((r) => r.server!));
const sources = (results: ProbeResult[]) => new Set(results.filter((r) => r.ok).map((r) => r.seenFrom!));

/** Registers the scenarios in the current `describe`; `cluster()` is ready by the time they run. */
export function scenarios(cluster: () => E2ECluster): void {
  it('ClusterIP: TCP and UDP from a pod reach every endpoint, client address kept', async () => {
    const c = cluster();
    const svc = await c.applyService(
      service('cip', {
        ports: [
          { name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' },
          { name: 'dns', port: 53, targetPort: 5353, protocol: 'UDP' },
        ],
      }),
    );
    await eventually(async () => {
      const r = await c.request('client', { host: svc.clusterIP, port: 80 }, 30);
      assert.deepEqual(servers(r), new Set(['pod-a', 'pod-b', 'pod-c']), `TCP: ${JSON.stringify(tally(r))}`);
      assert.deepEqual(sources(r), new Set([c.clientIP]), 'pods see the client pod, not the node');
    });
    await eventually(async () => {
      const r = await c.request('client', { host: svc.clusterIP, port: 53, protocol: 'udp' }, 30);
      assert.deepEqual(servers(r), new Set(['pod-a', 'pod-b', 'pod-c']), `UDP: ${JSON.stringify(tally(r))}`);
    });
  });

  it('a Service without endpoints refuses connections at once', async () => {
    const c = cluster();
    const svc = await c.applyService(service('empty', { selector: { app: 'nothing' } }));
    await eventually(async () => {
      const r = await c.request('client', { host: svc.clusterIP, port: 80 }, 3, 1000);
      assert.deepEqual(tally(r), { 'error:ECONNREFUSED': 3 });
    });
  });

  it('NodePort: from outside the cluster, to every endpoint, masqueraded', async () => {
    const c = cluster();
    const svc = await c.applyService(service('np', { type: 'NodePort' }));
    const port = svc.nodePorts.http!;
    await eventually(async () => {
      const r = await c.request('external', { host: c.nodeIP, port }, 30);
      assert.deepEqual(servers(r), new Set(['pod-a', 'pod-b', 'pod-c']), JSON.stringify(tally(r)));
      assert.ok(!sources(r).has(c.externalIP), 'externalTrafficPolicy Cluster masquerades the client');
    });
  });

  it('LoadBalancer: the ingress IP reaches the endpoints from outside', async () => {
    const c = cluster();
    await c.applyService(service('lb', { type: 'LoadBalancer' }));
    await c.setLoadBalancerIngress(NAMESPACE, 'lb', LB_IP);
    await eventually(async () => {
      const r = await c.request('external', { host: LB_IP, port: 80 }, 30);
      assert.deepEqual(servers(r), new Set(['pod-a', 'pod-b', 'pod-c']), JSON.stringify(tally(r)));
    });
  });

  it('sessionAffinity ClientIP: every connection of a client goes to one endpoint', async () => {
    const c = cluster();
    const svc = await c.applyService(service('sticky', { sessionAffinity: 'ClientIP' }));
    await eventually(async () => {
      const r = await c.request('client', { host: svc.clusterIP, port: 80 }, 20);
      assert.equal(servers(r).size, 1, `one endpoint for all 20: ${JSON.stringify(tally(r))}`);
      assert.equal(r.filter((x) => x.ok).length, 20, JSON.stringify(tally(r)));
    });
  });

  it('externalTrafficPolicy Local: node-local endpoints only, client address kept; drop without one', async () => {
    const c = cluster();
    const local = await c.applyService(
      service('local', { type: 'NodePort', externalTrafficPolicy: 'Local' }),
    );
    await eventually(async () => {
      const r = await c.request('external', { host: c.nodeIP, port: local.nodePorts.http! }, 30);
      assert.deepEqual(
        servers(r),
        new Set(['pod-a', 'pod-b']),
        `only ${c.node}'s pods: ${JSON.stringify(tally(r))}`,
      );
      assert.deepEqual(sources(r), new Set([c.externalIP]), 'the client address is kept');
    });
    // Only pod-c, on the other node: this node drops external traffic, but its pods still
    // reach the service through the ClusterIP (internal traffic uses every endpoint).
    const remote = await c.applyService(
      service('remote-only', {
        type: 'NodePort',
        externalTrafficPolicy: 'Local',
        selector: { tier: 'remote' },
      }),
    );
    await eventually(async () => {
      const r = await c.request('external', { host: c.nodeIP, port: remote.nodePorts.http! }, 3, 1000);
      assert.deepEqual(tally(r), { 'error:ETIMEDOUT': 3 }, `dropped on ${c.node}`);
    });
    const r = await c.request('client', { host: remote.clusterIP, port: 80 }, 5);
    assert.deepEqual(tally(r), { 'pod-c': 5 });
  });

  it('a ProxyPolicy (roundRobin) applied to a Service: status Programmed, an exactly even split', async () => {
    const c = cluster();
    const svc = await c.applyService(service('rr'));
    // Random first: all three answer (the rules are in place before the policy comes).
    await eventually(async () => {
      const r = await c.request('client', { host: svc.clusterIP, port: 80 }, 15);
      assert.equal(servers(r).size, 3, JSON.stringify(tally(r)));
    });
    await c.applyPolicy({
      apiVersion: 'nftproxy.dev/v1alpha1',
      kind: 'ProxyPolicy',
      metadata: { name: 'rr', namespace: NAMESPACE },
      spec: { selector: { serviceNames: ['rr'] }, scheduler: { type: 'roundRobin' } },
    });
    const status = await eventually(async () => {
      const s = await c.policyStatus(NAMESPACE, 'rr');
      const cond = (type: string) => s?.conditions?.find((x) => x.type === type);
      assert.equal(cond('Accepted')?.status, 'True', JSON.stringify(s));
      assert.equal(cond('Programmed')?.status, 'True', JSON.stringify(s));
      assert.equal(s?.nodes?.[c.node]?.programmed, true, JSON.stringify(s));
      return s!;
    }, 60_000);
    assert.equal(status.servicesSelected, 1);
    // Once programmed on this node, a single measurement: round robin is exact, random
    // would give 10/10/10 in under 3% of runs.
    const r = await c.request('client', { host: svc.clusterIP, port: 80 }, 30);
    assert.deepEqual(tally(r), { 'pod-a': 10, 'pod-b': 10, 'pod-c': 10 });
  });
}
