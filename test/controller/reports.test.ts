/**
 * What the operator warns about once the cluster is read: settings that silently do less than
 * meant.
 */
import assert from 'node:assert/strict';
import { HealthChecks, startWarnings } from '../../src/controller/reports.js';
import { ClusterStore } from '../../src/k8s/store.js';
import { parseResource } from '../../src/k8s/parse.js';
import { parseProxyConfig } from '../../src/proxy/config.js';

const object = (raw: Record<string, unknown>) => parseResource(raw).parsed!;
const svc = (name: string, clusterIPs: string[]) =>
  object({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: 'default' },
    spec: {
      clusterIP: clusterIPs[0],
      clusterIPs,
      ipFamilyPolicy: clusterIPs.length > 1 ? 'RequireDualStack' : 'SingleStack',
      ports: [{ port: 80 }],
    },
  });
const node = (name: string, podCIDRs: string[]) =>
  object({ apiVersion: 'v1', kind: 'Node', metadata: { name }, spec: { podCIDRs } });

describe('start warnings', () => {
  it('none when the node exists and every family with services has a cluster CIDR', () => {
    const store = new ClusterStore('n1');
    store.upsert(node('n1', ['10.244.1.0/24']));
    store.upsert(svc('web', ['10.96.0.10']));
    assert.deepEqual(
      startWarnings(store, parseProxyConfig({ nodeName: 'n1', clusterCIDRs: ['10.244.0.0/16'] })),
      [],
    );
  });

  it('names a --node no Node object has', () => {
    const store = new ClusterStore('n2');
    store.upsert(node('n1', []));
    const [w] = startWarnings(store, parseProxyConfig({ nodeName: 'n2', clusterCIDRs: ['10.244.0.0/16'] }));
    assert.match(w!, /^no Node object is named "n2" \(--node, or NODE_NAME\)/);
  });

  it('says which family lacks a cluster CIDR, how many services it concerns, and what the Node says', () => {
    const store = new ClusterStore('n1');
    store.upsert(node('n1', ['10.244.1.0/24', 'fd00:244:1::/64']));
    store.upsert(svc('web', ['10.96.0.10', 'fd00:96::10']));
    store.upsert(svc('api', ['10.96.0.11', 'fd00:96::11']));
    assert.deepEqual(
      startWarnings(store, parseProxyConfig({ nodeName: 'n1', clusterCIDRs: ['10.244.0.0/16'] })),
      [
        "no IPv6 cluster CIDR (--cluster-cidr), but 2 services have IPv6 ClusterIPs: off-cluster traffic to them is not masqueraded, and externalTrafficPolicy Local sends pods only to local endpoints (this Node's podCIDRs: fd00:244:1::/64)",
      ],
    );
  });

  it('with NodeCIDR, says when the Node has no podCIDRs', () => {
    const store = new ClusterStore('n1');
    store.upsert(node('n1', []));
    store.upsert(svc('web', ['10.96.0.10']));
    assert.deepEqual(
      startWarnings(store, parseProxyConfig({ nodeName: 'n1', detectLocalMode: 'NodeCIDR' })),
      [
        "no IPv4 cluster CIDR in this Node's spec.podCIDRs (detectLocalMode NodeCIDR), but 1 service has IPv4 ClusterIPs: off-cluster traffic to them is not masqueraded, and externalTrafficPolicy Local sends pods only to local endpoints",
      ],
    );
    // A Node podCIDR change makes everything dirty (the pod network changed).
    assert.deepEqual(store.upsert(node('n1', ['10.244.1.0/24'])).node, true);
  });
});

describe('health checks, kept a service at a time', () => {
  const local = (name: string, namespace = 'default', port = 31000) =>
    object({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name, namespace },
      spec: {
        type: 'LoadBalancer',
        clusterIP: '10.96.0.20',
        externalTrafficPolicy: 'Local',
        healthCheckNodePort: port,
        ports: [{ port: 80, nodePort: 30080 }],
      },
    });
  const slice = (service: string, endpoints: [ip: string, node: string][]) =>
    object({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: {
        name: `${service}-1`,
        namespace: 'default',
        labels: { 'kubernetes.io/service-name': service },
      },
      addressType: 'IPv4',
      ports: [{ port: 8080 }],
      endpoints: endpoints.map(([ip, nodeName]) => ({
        addresses: [ip],
        nodeName,
        conditions: { ready: true },
      })),
    });

  it('recomputes only the services a sync was asked to, and all of them the first time', () => {
    const store = new ClusterStore('n1');
    store.upsert(local('a', 'default', 31001));
    store.upsert(local('b', 'default', 31002));
    store.upsert(svc('plain', ['10.96.0.30']));
    store.upsert(slice('a', [['10.244.1.1', 'n1']]));
    const checks = new HealthChecks('n1');
    checks.update(store, ['default/a']); // not complete yet: every service
    assert.deepEqual(
      [...checks.current],
      [
        ['default/a', { port: 31001, localEndpoints: 1 }],
        ['default/b', { port: 31002, localEndpoints: 0 }],
      ],
    );
    store.upsert(
      slice('a', [
        ['10.244.1.1', 'n1'],
        ['10.244.1.2', 'n1'],
        ['10.244.2.1', 'n2'],
      ]),
    );
    store.upsert(slice('b', [['10.244.1.9', 'n1']]));
    checks.update(store, ['default/a']);
    assert.deepEqual(checks.current.get('default/a'), { port: 31001, localEndpoints: 2 }, 'a recomputed');
    assert.deepEqual(checks.current.get('default/b'), { port: 31002, localEndpoints: 0 }, 'b not asked for');
    store.remove('Service', 'default', 'a');
    checks.update(store, ['default/a']);
    assert.equal(checks.current.has('default/a'), false, 'a removed service has no check');
    checks.update(store);
    assert.deepEqual(
      checks.current.get('default/b'),
      { port: 31002, localEndpoints: 1 },
      'a full pass sees b',
    );
  });

  it('the store lists a namespace’s services (policies select within one)', () => {
    const store = new ClusterStore('n1');
    store.upsert(local('a', 'shop'));
    store.upsert(local('b', 'shop'));
    store.upsert(local('c', 'other'));
    store.remove('Service', 'shop', 'a');
    assert.deepEqual(
      [...store.servicesIn('shop')].map((s) => s.metadata.name),
      ['b'],
    );
    store.remove('Service', 'shop', 'b');
    assert.deepEqual([...store.servicesIn('shop')], []);
    assert.deepEqual(
      [...store.servicesIn('other')].map((s) => s.metadata.name),
      ['c'],
    );
  });
});
