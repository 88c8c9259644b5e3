/**
 * `explain`'s verdict line names why a packet is refused or dropped, from the steps the
 * tracer reports (which chain acted, through which set or map): one case per reason, on
 * rulesets compiled from Services.
 */
import assert from 'node:assert/strict';
import { formatTrace } from '../../src/cli/explain.js';
import { Tracer, type TracePacket } from '../../src/nft/tracer.js';
import { compile } from '../../src/proxy/compile.js';
import { parseProxyConfig } from '../../src/proxy/config.js';
import { Chains, Maps } from '../../src/proxy/names.js';
import { cluster, node, service, slice } from '../support/cluster.js';

const NODE_IP = '192.168.1.10';
const config = parseProxyConfig({ nodeName: 'n1', clusterCIDRs: ['10.244.0.0/16'] });
const elsewhere = { ip: '10.244.2.5', node: 'n2' };

function explain(objects: Parameters<typeof cluster>, packet: TracePacket): string {
  const r = compile(cluster(...objects), config);
  const result = new Tracer(r.ruleset, { localAddresses: [NODE_IP] }).trace(packet);
  return formatTrace(result, undefined, false)
    .split('\n')
    .find((l) => l.startsWith('verdict'))!;
}

const pod = (daddr: string, dport: number) =>
  ({ saddr: '10.244.1.7', daddr, dport, protocol: 'tcp', entry: 'pod' }) as const;
const outside = (daddr: string, dport: number, saddr = '203.0.113.9') =>
  ({ saddr, daddr, dport, protocol: 'tcp', entry: 'external' }) as const;

describe('explain: why a packet is refused or dropped', () => {
  const n1 = node('n1', [NODE_IP]);

  it('REJECT: a service port without endpoints, and a ClusterIP port nobody serves', () => {
    const empty = service('empty', { clusterIP: '10.96.0.10', ports: [{ port: 80 }] });
    assert.equal(
      explain([n1, empty], pod('10.96.0.10', 80)),
      'verdict  REJECT with tcp reset: the service port has no usable endpoints',
    );
    const web = service('web', { clusterIP: '10.96.0.11', ports: [{ port: 80 }] });
    assert.equal(
      explain([n1, web, slice('web', [{ port: 8080 }], ['10.244.1.3'])], pod('10.96.0.11', 81)),
      'verdict  REJECT with tcp reset: this ClusterIP has no such port',
    );
  });

  it('DROP: a source outside loadBalancerSourceRanges', () => {
    const lb = service(
      'lb',
      {
        type: 'LoadBalancer',
        clusterIP: '10.96.0.12',
        loadBalancerSourceRanges: ['198.51.100.0/24'],
        ports: [{ port: 80, nodePort: 30080 }],
      },
      { status: { loadBalancer: { ingress: [{ ip: '192.0.2.50' }] } } },
    );
    const objects = [n1, lb, slice('lb', [{ port: 8080 }], ['10.244.1.3'])] as Parameters<typeof cluster>;
    assert.equal(
      explain(objects, outside('192.0.2.50', 80)),
      'verdict  DROP: the source address is not allowed (source ranges)',
    );
    assert.match(explain(objects, outside('192.0.2.50', 80, '198.51.100.7')), /^verdict {2}DNAT/, 'allowed');
  });

  it('DROP: externalTrafficPolicy Local and internalTrafficPolicy Local without an endpoint here', () => {
    const ext = service('ext', {
      type: 'NodePort',
      clusterIP: '10.96.0.13',
      externalTrafficPolicy: 'Local',
      ports: [{ port: 80, nodePort: 30081 }],
    });
    assert.equal(
      explain([n1, ext, slice('ext', [{ port: 8080 }], [elsewhere])], outside(NODE_IP, 30081)),
      'verdict  DROP: externalTrafficPolicy Local and no endpoint on this node',
    );
    const int = service('int', {
      clusterIP: '10.96.0.14',
      internalTrafficPolicy: 'Local',
      ports: [{ port: 80 }],
    });
    assert.equal(
      explain([n1, int, slice('int', [{ port: 8080 }], [elsewhere])], pod('10.96.0.14', 80)),
      'verdict  DROP: internalTrafficPolicy Local and no endpoint on this node',
    );
  });

  it('the steps say which chain acted through which set, as explain reads them', () => {
    const r = compile(
      cluster(n1, service('empty', { clusterIP: '10.96.0.10', ports: [{ port: 80 }] })),
      config,
    );
    const [o] = new Tracer(r.ruleset, { localAddresses: [NODE_IP] }).trace(pod('10.96.0.10', 80)).outcomes;
    const rejecting = o!.steps.find((s) => s.kind === 'rule' && s.effect === 'reject');
    assert.ok(rejecting?.kind === 'rule', JSON.stringify(o!.steps));
    assert.ok(
      o!.steps.some((s) => s.kind === 'rule' && s.sets.includes(Maps.noEndpointServices)),
      JSON.stringify(o!.steps),
    );
    assert.ok(
      o!.steps.some((s) => s.kind === 'hook'),
      'the hooks entered are steps too',
    );
    assert.deepEqual(
      o!.path,
      o!.steps.map((s) => s.text),
      'the path is the steps as text',
    );
    assert.ok(!o!.steps.some((s) => s.kind === 'rule' && s.chain === Chains.firewall));
  });
});
