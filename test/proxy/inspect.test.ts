/**
 * Reading our tables back (the engine of `nftproxy status`): what the compiler wrote comes
 * back as services, schedulers, endpoints and shares.
 */
import assert from 'node:assert/strict';
import { compile } from '../../src/proxy/compile.js';
import { parseProxyConfig } from '../../src/proxy/config.js';
import { inspectTable, parsePickChainName, type ServiceView } from '../../src/proxy/inspect.js';
import { TABLE } from '../../src/proxy/names.js';
import { tableKey } from '../../src/nft/ruleset.js';
import type { ClusterState } from '../../src/k8s/types.js';
import { formatStatus } from '../../src/cli/status.js';
import { cluster, node, policy, service, slice } from '../support/cluster.js';

function views(state: ClusterState, family: 'ip' | 'ip6' = 'ip'): ServiceView[] {
  const r = compile(state, parseProxyConfig({ nodeName: 'node1', clusterCIDRs: ['10.244.0.0/16'] }));
  return inspectTable(r.ruleset.tables.get(tableKey(family, TABLE))!);
}

const at = (vs: ServiceView[], address: string | undefined, port: number) => {
  const v = vs.find((x) => x.address === address && x.port === port);
  assert.ok(v, `no view of ${address}:${port} in ${JSON.stringify(vs.map((x) => `${x.address}:${x.port}`))}`);
  return v;
};

const endpoints = [
  { ip: '10.244.1.10', node: 'node1', zone: 'a', hostname: 'web-0', pod: 'web-0' },
  { ip: '10.244.2.10', node: 'node2', zone: 'b', hostname: 'web-1', pod: 'web-1' },
  { ip: '10.244.3.10', node: 'node3', zone: 'b', hostname: 'web-2', pod: 'web-2' },
];
const web = (spec: Record<string, unknown> = {}) => [
  service('web', {
    type: 'NodePort',
    clusterIP: '10.96.0.10',
    ports: [{ port: 80, targetPort: 8080, nodePort: 30080 }],
    ...spec,
  }),
  slice('web', [{ port: 8080 }], endpoints),
  node('node1', ['192.168.50.1'], { zone: 'a' }),
];
const byName = { serviceNames: ['web'] };

describe('inspectTable', () => {
  it('reads a ClusterIP and its NodePort back: random, three endpoints, a third each', () => {
    const vs = views(cluster(...web()));
    const vip = at(vs, '10.96.0.10', 80);
    assert.equal(vip.kind, 'service');
    assert.equal(vip.protocol, 'tcp');
    assert.equal(vip.state, 'endpoints');
    assert.equal(vip.cluster?.scheduler, 'random');
    assert.deepEqual(
      vip.cluster?.endpoints.map((e) => [e.address, e.port, e.slots, Number(e.share.toFixed(3))]),
      endpoints.map((e) => [e.ip, 8080, 1, 0.333]),
    );
    const np = at(vs, undefined, 30080);
    assert.equal(np.kind, 'nodeport');
    assert.equal(np.cluster?.endpoints.length, 3);
    assert.equal(vip.cluster?.endpoints[0]?.connections, undefined, 'compiled tables have no counts');
  });

  it('a service without endpoints reads as reject', () => {
    const vs = views(cluster(service('empty', { clusterIP: '10.96.0.20', ports: [{ port: 8080 }] })));
    assert.equal(at(vs, '10.96.0.20', 8080).state, 'reject');
    assert.equal(at(vs, '10.96.0.20', 8080).cluster, undefined);
  });

  it('names each ProxyPolicy scheduler as the user did', () => {
    for (const type of ['roundRobin', 'sourceHash', 'maglev'] as const) {
      const vs = views(cluster(...web(), policy('p', { selector: byName, scheduler: { type } })));
      const v = at(vs, '10.96.0.10', 80);
      assert.equal(v.cluster?.scheduler, type);
      if (type === 'maglev') {
        assert.equal(v.cluster?.slots, 251);
        assert.deepEqual(
          v.cluster?.endpoints.map((e) => e.slots).sort(),
          [83, 84, 84],
          'Maglev shares of 251 slots',
        );
      }
    }
  });

  it('weighted: weights come back as slots and shares', () => {
    const vs = views(
      cluster(
        ...web(),
        policy('w', {
          selector: byName,
          scheduler: { type: 'weighted', weights: [{ match: { zone: 'a' }, weight: 3 }] },
        }),
      ),
    );
    const v = at(vs, '10.96.0.10', 80);
    assert.equal(v.cluster?.scheduler, 'weighted');
    assert.deepEqual(
      v.cluster?.endpoints.map((e) => [e.address, e.slots, e.share]),
      [
        ['10.244.1.10', 3, 0.6],
        ['10.244.2.10', 1, 0.2],
        ['10.244.3.10', 1, 0.2],
      ],
    );
  });

  it('affinity, externalTrafficPolicy Local and source ranges show as flags and pools', () => {
    const vs = views(
      cluster(
        service(
          'web',
          {
            type: 'LoadBalancer',
            clusterIP: '10.96.0.10',
            sessionAffinity: 'ClientIP',
            externalTrafficPolicy: 'Local',
            loadBalancerSourceRanges: ['203.0.113.0/24'],
            ports: [{ port: 80, targetPort: 8080, nodePort: 30080 }],
          },
          { status: { loadBalancer: { ingress: [{ ip: '198.51.100.10' }] } } },
        ),
        slice('web', [{ port: 8080 }], endpoints),
        node('node1', ['192.168.50.1'], { zone: 'a' }),
      ),
    );
    const lb = at(vs, '198.51.100.10', 80);
    assert.equal(lb.affinitySeconds, 10800);
    assert.equal(lb.sourceRanges, true);
    assert.ok(lb.local && lb.local !== 'drop', 'local pool');
    assert.deepEqual(
      lb.local.endpoints.map((e) => e.address),
      ['10.244.1.10'],
      'only the endpoint on node1',
    );
    assert.equal(lb.cluster?.endpoints.length, 3, 'pods and the host still reach all');
    const vip = at(vs, '10.96.0.10', 80);
    assert.equal(vip.local, undefined, 'the ClusterIP is not external');
    assert.equal(vip.affinitySeconds, 10800);
  });

  it('externalTrafficPolicy Local without a local endpoint reads as drop', () => {
    const vs = views(
      cluster(
        service('web', {
          type: 'NodePort',
          clusterIP: '10.96.0.10',
          externalTrafficPolicy: 'Local',
          ports: [{ port: 80, targetPort: 8080, nodePort: 30080 }],
        }),
        slice('web', [{ port: 8080 }], endpoints.slice(1)),
        node('node1', ['192.168.50.1'], { zone: 'a' }),
      ),
    );
    assert.equal(at(vs, undefined, 30080).local, 'drop');
  });

  it('internalTrafficPolicy Local without a local endpoint reads as drop, not reject', () => {
    const vs = views(
      cluster(
        service('web', {
          clusterIP: '10.96.0.10',
          internalTrafficPolicy: 'Local',
          ports: [{ port: 80, targetPort: 8080 }],
        }),
        slice('web', [{ port: 8080 }], endpoints.slice(1)),
        node('node1', ['192.168.50.1'], { zone: 'a' }),
      ),
    );
    assert.equal(at(vs, '10.96.0.10', 80).state, 'drop');
    assert.match(formatStatus(vs), /10\.96\.0\.10:80 +drop: internalTrafficPolicy Local/);
  });

  it('parses pick chain names and refuses others', () => {
    assert.deepEqual(parsePickChainName('nodeport-pick-hash-251-local'), {
      kind: 'nodeport',
      scheduler: 'hash',
      slots: 251,
      local: true,
    });
    assert.equal(parsePickChainName('pick-fancy-3'), undefined);
    assert.equal(parsePickChainName('reject-chain'), undefined);
  });

  it('formats an ipvsadm-like table', () => {
    const text = formatStatus(views(cluster(...web())));
    assert.match(text, /^1 service address ports, 1 NodePorts, 3 endpoints$/m);
    assert.match(text, /^TCP {2}10\.96\.0\.10:80\s+random$/m);
    assert.match(text, /^TCP {2}\*:30080 \(NodePort\)\s+random$/m);
    assert.match(text, /^ {2}-> 10\.244\.2\.10:8080\s+1\s+33\.3%\s+-$/m);
  });
});
