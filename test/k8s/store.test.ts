/**
 * The store's record of endpoint changes not yet programmed (network programming latency and
 * trace links come from it).
 */
import assert from 'node:assert/strict';
import { parseResource } from '../../src/k8s/parse.js';
import { ClusterStore } from '../../src/k8s/store.js';

const slice = (name: string, service: string, ip: string, trigger?: string) => {
  const { parsed } = parseResource({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name,
      namespace: 'default',
      labels: { 'kubernetes.io/service-name': service },
      ...(trigger ? { annotations: { 'endpoints.kubernetes.io/last-change-trigger-time': trigger } } : {}),
    },
    addressType: 'IPv4',
    ports: [{ port: 80 }],
    endpoints: [{ addresses: [ip] }],
  });
  assert.ok(parsed, 'fixture parses');
  return parsed;
};

/** Reads the pending changes and forgets them, as a successful sync does. */
function take(store: ClusterStore, services?: string[]) {
  const changes = store.endpointChanges(services);
  store.forgetEndpointChanges(changes);
  return changes;
}

describe('ClusterStore endpoint changes', () => {
  it('a change that arrives after a sync read the pending ones waits for the next sync', () => {
    let now = 1;
    const store = new ClusterStore('n1', () => now);
    store.upsert(slice('web-1', 'web', '10.0.0.1'));
    const read = store.endpointChanges(['default/web']);
    now = 2;
    store.upsert(slice('web-1', 'web', '10.0.0.9')); // arrives while the sync runs
    store.forgetEndpointChanges(read);
    assert.deepEqual(store.endpointChanges(), [
      { service: 'default/web', slice: 'default/web-1', receivedAt: 2 },
    ]);
  });

  it('records each change with its trigger time and hands it out once', () => {
    let now = 1_000;
    const store = new ClusterStore('n1', () => now);
    store.upsert(slice('web-1', 'web', '10.0.0.1', '2026-11-23T10:00:00Z'));
    now = 2_000;
    store.upsert(slice('api-1', 'api', '10.0.0.2'));
    store.upsert(slice('api-1', 'api', '10.0.0.2')); // unchanged: no change recorded
    now = 3_000;
    store.remove('EndpointSlice', 'default', 'web-1');

    assert.deepEqual(take(store, ['default/web']), [
      {
        service: 'default/web',
        slice: 'default/web-1',
        triggerTime: Date.parse('2026-11-23T10:00:00Z'),
        receivedAt: 1_000,
      },
      { service: 'default/web', slice: 'default/web-1', receivedAt: 3_000 },
    ]);
    assert.deepEqual(take(store, ['default/web']), [], 'taken once');
    assert.deepEqual(take(store), [{ service: 'default/api', slice: 'default/api-1', receivedAt: 2_000 }]);
    assert.deepEqual(take(store), []);
  });

  it('ignores a trigger time that is not a timestamp', () => {
    const store = new ClusterStore('n1', () => 5);
    store.upsert(slice('web-1', 'web', '10.0.0.1', 'yesterday'));
    assert.deepEqual(take(store), [{ service: 'default/web', slice: 'default/web-1', receivedAt: 5 }]);
  });

  it('a slice moving to another service is a change of both', () => {
    const store = new ClusterStore('n1', () => 7);
    store.upsert(slice('s-1', 'web', '10.0.0.1'));
    take(store);
    store.upsert(slice('s-1', 'api', '10.0.0.1'));
    assert.deepEqual(
      take(store).map((c) => c.service),
      ['default/api', 'default/web'],
    );
  });
});

describe('ClusterStore ServiceCIDRs', () => {
  const range = (name: string, cidrs: unknown[]) =>
    parseResource({
      apiVersion: 'networking.k8s.io/v1',
      kind: 'ServiceCIDR',
      metadata: { name },
      spec: { cidrs },
    });

  it('parses spec.cidrs canonically and refuses a bad one, naming it', () => {
    assert.deepEqual(range('kubernetes', ['10.96.0.5/16', 'FD00:96::/112']).parsed?.object, {
      metadata: { namespace: '', name: 'kubernetes', labels: {}, annotations: {} },
      cidrs: ['10.96.0.0/16', 'fd00:96::/112'],
    });
    const bad = range('odd', ['10.96.0.0/33']);
    assert.equal(bad.parsed, undefined);
    assert.deepEqual(
      bad.diagnostics.map((d) => `${d.object} ${d.field}: ${d.message}`),
      ['ServiceCIDR odd spec.cidrs[0]: not a valid CIDR: "10.96.0.0/33"'],
    );
  });

  it('a ServiceCIDR change makes everything dirty; the same ranges again, nothing', () => {
    const store = new ClusterStore('n1');
    assert.deepEqual(store.upsert(range('kubernetes', ['10.96.0.0/16']).parsed!), {
      services: [],
      node: true,
    });
    assert.deepEqual(store.upsert(range('kubernetes', ['10.96.0.0/16']).parsed!), {
      services: [],
      node: false,
    });
    assert.deepEqual(store.upsert(range('kubernetes', ['10.96.0.0/12']).parsed!), {
      services: [],
      node: true,
    });
    assert.deepEqual(
      store.state().serviceCIDRs?.map((s) => s.cidrs),
      [['10.96.0.0/12']],
    );
    assert.deepEqual([...store.keysOf('ServiceCIDR')], ['/kubernetes']);
    assert.deepEqual(store.remove('ServiceCIDR', '', 'kubernetes'), { services: [], node: true });
    assert.deepEqual(store.remove('ServiceCIDR', '', 'kubernetes'), { services: [], node: false });
  });
});
