/**
 * What the operator warns about once the cluster is read: settings that silently do less than
 * meant.
 */
import assert from 'node:assert/strict';
import { startWarnings } from '../../src/controller/reports.js';
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
