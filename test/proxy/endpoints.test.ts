/**
 * Which endpoints of a service port are used: ready ones, else serving and terminating ones;
 * an address listed more than once counts once, with its most usable condition.
 */
import assert from 'node:assert/strict';
import { usableBackends } from '../../src/proxy/endpoints.js';
import type { ServicePort } from '../../src/k8s/types.js';
import { slice } from '../support/cluster.js';

const port = { name: 'http', protocol: 'TCP', port: 80, targetPort: 8080 } as ServicePort;
const ports = [{ name: 'http', port: 8080 }];
const used = (...slices: ReturnType<typeof slice>[]) =>
  usableBackends(port, slices).map((b) => `${b.ip}:${b.port}`);

describe('usable endpoints', () => {
  it('uses ready endpoints, else serving and terminating ones, else none', () => {
    const eps = [
      { ip: '10.0.0.1' },
      { ip: '10.0.0.2', ready: false, terminating: true },
      { ip: '10.0.0.3', ready: false },
    ];
    assert.deepEqual(used(slice('s', ports, eps)), ['10.0.0.1:8080']);
    assert.deepEqual(used(slice('s', ports, eps.slice(1))), ['10.0.0.2:8080']);
    assert.deepEqual(
      used(slice('s', ports, [{ ip: '10.0.0.2', ready: false, serving: false, terminating: true }])),
      [],
    );
  });

  it('counts an address listed twice once, with its most usable condition, in either order', () => {
    // Found by the property test: a not-ready entry listed before a terminating one of the same
    // pod hid the fallback, so the service rejected instead of draining to the pod.
    const notReady = { ip: '10.0.0.7', ready: false };
    const draining = { ip: '10.0.0.7', ready: false, terminating: true };
    const ready = { ip: '10.0.0.7' };
    assert.deepEqual(used(slice('s', ports, [notReady, draining])), ['10.0.0.7:8080']);
    assert.deepEqual(used(slice('s', ports, [draining, notReady])), ['10.0.0.7:8080']);
    assert.deepEqual(used(slice('s', ports, [notReady]), slice('s', ports, [draining])), ['10.0.0.7:8080']);
    // A ready entry wins over a draining one: it is not the fallback then.
    assert.deepEqual(
      used(
        slice('s', ports, [draining, ready]),
        slice('s', ports, [{ ip: '10.0.0.8', ready: false, terminating: true }]),
      ),
      ['10.0.0.7:8080'],
    );
  });
});
