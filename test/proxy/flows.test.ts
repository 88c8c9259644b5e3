/**
 * Packet-flow tests: compile a cluster, trace packets through the ruleset, and check the
 * endpoints reached, masquerading and rejections, one behaviour at a time.
 */
import assert from 'node:assert/strict';
import { compile } from '../../src/proxy/compile.js';
import { RulesetBuilder } from '../../src/proxy/builder.js';
import { compileService } from '../../src/proxy/service.js';
import { parseProxyConfig, type ProxyConfigInput } from '../../src/proxy/config.js';
import { type Entry, Tracer, type TraceProtocol, type TraceResult } from '../../src/nft/tracer.js';
import type { ClusterState } from '../../src/k8s/types.js';
import { cluster, node, service, serviceCIDR, slice } from '../support/cluster.js';

const NODE_IP = '192.168.50.1';
const NODE_IP6 = 'fd00:50::1';
const OTHER_LOCAL = '172.16.0.1'; // a second local address of the node
const POD = '10.244.1.50';
const POD6 = 'fd00:244::50';
const OUTSIDE = '192.168.50.2';
const OUTSIDE6 = 'fd00:50::2';

const BASE: ProxyConfigInput = { nodeName: 'node1', clusterCIDRs: ['10.244.0.0/16', 'fd00:244::/64'] };

function tracerFor(state: ClusterState, config: Partial<ProxyConfigInput> = {}): Tracer {
  const result = compile(state, parseProxyConfig({ ...BASE, ...config }));
  return new Tracer(result.ruleset, { localAddresses: [NODE_IP, NODE_IP6, OTHER_LOCAL, '127.0.0.1', '::1'] });
}

function trace(
  t: Tracer,
  from: string,
  to: string,
  port: number,
  protocol: TraceProtocol = 'tcp',
  entry?: Entry,
): TraceResult {
  const e: Entry =
    entry ??
    (from === NODE_IP || from === NODE_IP6
      ? 'host'
      : from.startsWith('10.244.') || from.startsWith('fd00:244:')
        ? 'pod'
        : 'external');
  return t.trace({ saddr: from, daddr: to, dport: port, protocol, entry: e });
}

/** Asserts a DNAT to exactly `endpoints`, and the masquerade state of every outcome. */
function assertReaches(r: TraceResult, endpoints: string[], masquerade: boolean): void {
  assert.deepEqual(r.endpoints, [...endpoints].sort());
  for (const o of r.outcomes) {
    assert.equal(o.verdict, 'accept', `unexpected ${o.verdict}: ${o.path.join(' | ')}`);
    assert.equal(
      o.masquerade,
      masquerade,
      `masquerade ${o.masquerade} to ${o.dnat?.addr}: ${o.path.join(' | ')}`,
    );
  }
}

function assertRejected(r: TraceResult, type: string): void {
  assert.equal(r.outcomes.length, 1);
  assert.equal(r.outcomes[0]!.verdict, 'reject', r.outcomes[0]!.path.join(' | '));
  assert.equal(r.outcomes[0]!.reject, type);
}

function assertUntouched(r: TraceResult): void {
  assert.deepEqual(r.endpoints, []);
  for (const o of r.outcomes) {
    assert.equal(o.verdict, 'accept');
    assert.equal(o.dnat, undefined);
    assert.equal(o.masquerade, false);
  }
}

const web = () =>
  cluster(
    node('node1', [NODE_IP, NODE_IP6]),
    service(
      'web',
      {
        type: 'LoadBalancer',
        clusterIP: '10.96.0.10',
        externalIPs: ['192.168.99.10'],
        ports: [{ name: 'http', port: 80, targetPort: 'http', nodePort: 30080 }],
      },
      { status: { loadBalancer: { ingress: [{ ip: '192.168.99.20' }] } } },
    ),
    slice('web', [{ name: 'http', port: 8080 }], ['10.244.1.10', '10.244.1.11', '10.244.2.10']),
  );

describe('packet flows', () => {
  describe('ClusterIP', () => {
    it("spreads a pod's connection over every ready endpoint, keeping its source", () => {
      assertReaches(
        trace(tracerFor(web()), POD, '10.96.0.10', 80),
        ['10.244.1.10:8080', '10.244.1.11:8080', '10.244.2.10:8080'],
        false,
      );
    });

    it('masquerades traffic from outside the cluster CIDRs', () => {
      assertReaches(
        trace(tracerFor(web()), OUTSIDE, '10.96.0.10', 80),
        ['10.244.1.10:8080', '10.244.1.11:8080', '10.244.2.10:8080'],
        true,
      );
    });

    it('masquerades traffic from the node itself', () => {
      assertReaches(
        trace(tracerFor(web()), NODE_IP, '10.96.0.10', 80),
        ['10.244.1.10:8080', '10.244.1.11:8080', '10.244.2.10:8080'],
        true,
      );
    });

    it('masquerades pods too with --masquerade-all', () => {
      const r = trace(tracerFor(web(), { masqueradeAll: true }), POD, '10.96.0.10', 80);
      assertReaches(r, ['10.244.1.10:8080', '10.244.1.11:8080', '10.244.2.10:8080'], true);
    });

    it("with detectLocalMode NodeCIDR, takes this Node's podCIDRs for the pod network", () => {
      const state = web();
      state.nodes = [node('node1', [NODE_IP, NODE_IP6], { podCIDRs: ['10.244.1.0/24'] })];
      const t = tracerFor(state, { clusterCIDRs: [], detectLocalMode: 'NodeCIDR' });
      const all = ['10.244.1.10:8080', '10.244.1.11:8080', '10.244.2.10:8080'];
      assertReaches(trace(t, POD, '10.96.0.10', 80), all, false);
      // A pod of another node is off this node's pod CIDR: masqueraded, as kube-proxy does.
      assertReaches(trace(t, '10.244.2.50', '10.96.0.10', 80, 'tcp', 'pod'), all, true);
      // With ClusterCIDR, the same pod keeps its address.
      assertReaches(trace(tracerFor(state), '10.244.2.50', '10.96.0.10', 80, 'tcp', 'pod'), all, false);
    });

    it('with BridgeInterface or InterfaceNamePrefix, tells pods by the interface they arrive on', () => {
      const all = ['10.244.1.10:8080', '10.244.1.11:8080', '10.244.2.10:8080'];
      const bridge = tracerFor(web(), {
        clusterCIDRs: [],
        detectLocalMode: 'BridgeInterface',
        podBridgeInterface: 'cbr0',
      });
      const viaBridge = (iifname: string) =>
        bridge.trace({
          saddr: '10.244.9.9',
          daddr: '10.96.0.10',
          dport: 80,
          protocol: 'tcp',
          entry: 'pod',
          iifname,
        });
      assertReaches(viaBridge('cbr0'), all, false);
      assertReaches(viaBridge('eth0'), all, true); // the same address, from another interface: outside
      const prefix = tracerFor(web(), {
        detectLocalMode: 'InterfaceNamePrefix',
        podInterfaceNamePrefix: 'veth',
      });
      const via = (iifname: string, saddr = POD) =>
        prefix.trace({ saddr, daddr: '10.96.0.10', dport: 80, protocol: 'tcp', entry: 'pod', iifname });
      assertReaches(via('veth3f2a'), all, false);
      assertReaches(via('eth0'), all, true);
      // The node itself has no input interface: off-cluster, as in ClusterCIDR mode.
      assertReaches(trace(prefix, NODE_IP, '10.96.0.10', 80), all, true);
      // externalTrafficPolicy Local: a pod arriving on a veth reaches every endpoint.
      const local = web();
      (local.services[0] as { externalTrafficPolicy: string }).externalTrafficPolicy = 'Local';
      const t = tracerFor(local, {
        nodeName: 'node9',
        detectLocalMode: 'InterfaceNamePrefix',
        podInterfaceNamePrefix: 'veth',
      });
      const lb = (iifname: string) =>
        t.trace({
          saddr: '10.244.5.5',
          daddr: '192.168.99.20',
          dport: 80,
          protocol: 'tcp',
          entry: 'external',
          iifname,
        });
      assert.deepEqual(lb('veth1').endpoints, all);
      assert.deepEqual(
        lb('eth0').outcomes.map((o) => o.verdict),
        ['drop'],
        'outside, no endpoint on node9',
      );
      assert.throws(
        () => parseProxyConfig({ ...BASE, detectLocalMode: 'BridgeInterface' }),
        /pod bridge interface: required with detect local mode BridgeInterface/,
      );
      assert.throws(
        () =>
          parseProxyConfig({
            ...BASE,
            detectLocalMode: 'InterfaceNamePrefix',
            podInterfaceNamePrefix: 'a"b',
          }),
        /not an interface name/,
      );
    });

    it('does not masquerade off-cluster sources when no cluster CIDR is known', () => {
      const r = trace(tracerFor(web(), { clusterCIDRs: [] }), OUTSIDE, '10.96.0.10', 80);
      assertReaches(r, ['10.244.1.10:8080', '10.244.1.11:8080', '10.244.2.10:8080'], false);
    });

    it('rejects an unused port of a live ClusterIP, with a TCP reset', () => {
      assertRejected(trace(tracerFor(web()), POD, '10.96.0.10', 81), 'tcp reset');
      assertRejected(trace(tracerFor(web()), NODE_IP, '10.96.0.10', 81), 'tcp reset');
    });

    it('rejects an unused UDP port with ICMP port unreachable', () => {
      assertRejected(trace(tracerFor(web()), POD, '10.96.0.10', 81, 'udp'), 'icmp port-unreachable');
    });

    it('rejects a protocol the port is not declared for', () => {
      // 80/tcp exists, 80/udp does not: refused, never sent to a TCP endpoint.
      assertRejected(trace(tracerFor(web()), POD, '10.96.0.10', 80, 'udp'), 'icmp port-unreachable');
    });

    it('leaves traffic to other addresses alone', () => {
      assertUntouched(trace(tracerFor(web()), POD, '10.96.0.99', 80));
      assertUntouched(trace(tracerFor(web()), POD, '8.8.8.8', 80));
    });

    it('drops traffic to an unallocated address of --service-cidr, from pods and the node', () => {
      const t = tracerFor(web(), { serviceCIDRs: ['10.96.0.0/16', 'fd00:96::/112'] });
      for (const from of [POD, NODE_IP]) {
        const r = trace(t, from, '10.96.0.99', 80);
        assert.deepEqual(
          r.outcomes.map((o) => o.verdict),
          ['drop'],
          `${from}: ${r.outcomes[0]?.path.join(' | ')}`,
        );
      }
      assert.deepEqual(
        trace(t, POD6, 'fd00:96::99', 80).outcomes.map((o) => o.verdict),
        ['drop'],
      );
      // A live ClusterIP still answers, its unused port still gets a reset, and outside the
      // range nothing changes.
      assertReaches(
        trace(t, POD, '10.96.0.10', 80),
        ['10.244.1.10:8080', '10.244.1.11:8080', '10.244.2.10:8080'],
        false,
      );
      assertRejected(trace(t, POD, '10.96.0.10', 81), 'tcp reset');
      assertUntouched(trace(t, POD, '8.8.8.8', 80));
    });

    it('learns service CIDRs from ServiceCIDR objects too', () => {
      const state = web();
      state.serviceCIDRs = [serviceCIDR('kubernetes', ['10.96.0.0/16'])];
      assert.deepEqual(
        trace(tracerFor(state), POD, '10.96.0.99', 80).outcomes.map((o) => o.verdict),
        ['drop'],
      );
    });
  });

  describe('hairpin', () => {
    it('masquerades a pod that reaches itself through its service, and only then', () => {
      const r = trace(tracerFor(web()), '10.244.1.10', '10.96.0.10', 80);
      assert.deepEqual(r.endpoints, ['10.244.1.10:8080', '10.244.1.11:8080', '10.244.2.10:8080']);
      for (const o of r.outcomes) assert.equal(o.masquerade, o.dnat!.addr === '10.244.1.10', o.dnat!.addr);
    });
  });

  describe('NodePort', () => {
    const all = ['10.244.1.10:8080', '10.244.1.11:8080', '10.244.2.10:8080'];

    it('answers on the node IP from outside, masqueraded', () => {
      assertReaches(trace(tracerFor(web()), OUTSIDE, NODE_IP, 30080), all, true);
    });

    it('answers on every local address by default', () => {
      assertReaches(trace(tracerFor(web()), OUTSIDE, OTHER_LOCAL, 30080), all, true);
    });

    it('answers the node itself', () => {
      assertReaches(trace(tracerFor(web()), NODE_IP, NODE_IP, 30080), all, true);
    });

    it('never answers on loopback', () => {
      assertUntouched(trace(tracerFor(web()), '127.0.0.1', '127.0.0.1', 30080, 'tcp', 'host'));
    });

    it("does not capture the port on addresses that are not the node's", () => {
      assertUntouched(trace(tracerFor(web()), POD, '192.168.50.77', 30080));
    });

    it('answers only on addresses in --nodeport-addresses when given', () => {
      const t = tracerFor(web(), { nodePortAddresses: ['192.168.50.0/24'] });
      assertReaches(trace(t, OUTSIDE, NODE_IP, 30080), all, true);
      assertUntouched(trace(t, OUTSIDE, OTHER_LOCAL, 30080));
    });

    it('keeps answering IPv6 NodePorts on every address when only IPv4 nodeport addresses are given', () => {
      const state = cluster(
        node('node1', [NODE_IP, NODE_IP6]),
        service('d', {
          type: 'NodePort',
          clusterIPs: ['10.96.0.61', 'fd00:96::61'],
          ports: [{ port: 80, nodePort: 30061 }],
        }),
        slice('d', [{ port: 80 }], ['10.244.1.61']),
        slice('d', [{ port: 80 }], ['fd00:244::61']),
      );
      const t = tracerFor(state, { nodePortAddresses: ['192.168.50.0/24'] });
      assertReaches(trace(t, OUTSIDE6, NODE_IP6, 30061), ['[fd00:244::61]:80'], true);
      assertUntouched(trace(t, OUTSIDE, OTHER_LOCAL, 30061));
    });

    it('accepts --nodeport-addresses primary inside a given CIDR without overlapping elements', () => {
      const result = compile(
        web(),
        parseProxyConfig({ ...BASE, nodePortAddresses: ['192.168.0.0/16', 'primary'] }),
      );
      const elems = [
        ...result.ruleset.tables.get('ip nftproxy')!.sets.get('nodeport-addresses')!.elems.values(),
      ];
      assert.deepEqual(elems, [{ prefix: { addr: '192.168.0.0', len: 16 } }]);
    });

    it("answers on the node's own IPs with --nodeport-addresses primary", () => {
      const t = tracerFor(web(), { nodePortAddresses: ['primary'] });
      assertReaches(trace(t, OUTSIDE, NODE_IP, 30080), all, true);
      assertUntouched(trace(t, OUTSIDE, OTHER_LOCAL, 30080));
    });
  });

  describe('external IPs and load balancer IPs', () => {
    const all = ['10.244.1.10:8080', '10.244.1.11:8080', '10.244.2.10:8080'];

    it('forwards an external IP, masqueraded', () => {
      assertReaches(trace(tracerFor(web()), OUTSIDE, '192.168.99.10', 80), all, true);
    });

    it('forwards a load balancer ingress IP, masqueraded, also for pods', () => {
      assertReaches(trace(tracerFor(web()), OUTSIDE, '192.168.99.20', 80), all, true);
      assertReaches(trace(tracerFor(web()), POD, '192.168.99.20', 80), all, true);
    });

    it('applies loadBalancerSourceRanges to the LB IP only: the ClusterIP stays open', () => {
      const state = cluster(
        service(
          'fw',
          {
            type: 'LoadBalancer',
            clusterIP: '10.96.0.31',
            loadBalancerSourceRanges: ['203.0.113.0/24'],
            ports: [{ port: 80, nodePort: 30031 }],
          },
          { status: { loadBalancer: { ingress: [{ ip: '192.168.99.31' }] } } },
        ),
        slice('fw', [{ port: 80 }], ['10.244.1.10']),
      );
      const result = compile(state, parseProxyConfig(BASE));
      assert.deepEqual(
        result.diagnostics.filter((d) => d.severity === 'error'),
        [],
      );
      const dropped = trace(tracerFor(state), OUTSIDE, '192.168.99.31', 80);
      assert.ok(
        dropped.outcomes.every((o) => o.verdict === 'drop'),
        JSON.stringify(dropped.outcomes),
      );
      assertReaches(trace(tracerFor(state), POD, '10.96.0.31', 80), ['10.244.1.10:80'], false);
    });

    it('programs ClientIP session affinity without a warning', () => {
      const state = cluster(
        service('aff', { clusterIP: '10.96.0.32', sessionAffinity: 'ClientIP', ports: [{ port: 80 }] }),
        slice('aff', [{ port: 80 }], ['10.244.1.10']),
      );
      const result = compile(state, parseProxyConfig(BASE));
      assert.deepEqual(result.diagnostics, []);
      const res = trace(tracerFor(state), POD, '10.96.0.32', 80);
      assert.ok(
        res.outcomes[0]!.path.some((s) => s.includes('affinity')),
        res.outcomes[0]!.path.join(' | '),
      );
    });

    it('claims an address listed both as external IP and LB ingress IP once, and updates it', () => {
      const state = (eps: string[]) =>
        cluster(
          service(
            'twice',
            {
              type: 'LoadBalancer',
              clusterIP: '10.96.0.33',
              externalIPs: ['192.168.99.33'],
              ports: [{ port: 80, nodePort: 30033 }],
            },
            { status: { loadBalancer: { ingress: [{ ip: '192.168.99.33' }] } } },
          ),
          slice('twice', [{ port: 80 }], eps),
        );
      const b = new RulesetBuilder(parseProxyConfig(BASE), []);
      const set = (eps: string[]) => {
        const s = state(eps);
        b.setService('default/twice', compileService(s.services[0]!, s.endpointSlices));
      };
      set(['10.244.1.10']);
      set(['10.244.1.11']); // used to throw: the second claim of one address
      assert.deepEqual(b.diagnostics(), []);
      const t = new Tracer(b.ruleset(), { localAddresses: [NODE_IP] });
      assertReaches(
        t.trace({ saddr: OUTSIDE, daddr: '192.168.99.33', dport: 80, protocol: 'tcp', entry: 'external' }),
        ['10.244.1.11:80'],
        true,
      );
    });

    it('admits the LB IP itself as a source when the source ranges admit a node IP', () => {
      const state = (ranges: string[]) =>
        cluster(
          node('node1', [NODE_IP]),
          service(
            'fw',
            {
              type: 'LoadBalancer',
              clusterIP: '10.96.0.34',
              loadBalancerSourceRanges: ranges,
              ports: [{ port: 80, nodePort: 30034 }],
            },
            { status: { loadBalancer: { ingress: [{ ip: '192.168.99.34' }] } } },
          ),
          slice('fw', [{ port: 80 }], ['10.244.1.10']),
        );
      // The node reaches its own VIP (held locally, as MetalLB L2 or kube-vip do): the
      // packet leaves with the VIP as its source.
      const fromVIP = (ranges: string[]) =>
        new Tracer(compile(state(ranges), parseProxyConfig(BASE)).ruleset, {
          localAddresses: [NODE_IP, '192.168.99.34'],
        }).trace({
          saddr: '192.168.99.34',
          daddr: '192.168.99.34',
          dport: 80,
          protocol: 'tcp',
          entry: 'host',
        });
      assertReaches(fromVIP(['192.168.50.0/24']), ['10.244.1.10:80'], true);
      // Ranges that do not admit the node do not admit its VIP either.
      assert.deepEqual(
        fromVIP(['203.0.113.0/24']).outcomes.map((o) => o.verdict),
        ['drop'],
      );
      // Outside sources are still held to the ranges.
      const t = tracerFor(state(['192.168.50.0/24']));
      assert.deepEqual(
        trace(t, '203.0.113.9', '192.168.99.34', 80).outcomes.map((o) => o.verdict),
        ['drop'],
      );
    });

    it('does not capture an ingress IP with ipMode Proxy', () => {
      const state = cluster(
        service(
          'lb',
          { type: 'LoadBalancer', clusterIP: '10.96.0.30', ports: [{ port: 80, nodePort: 30030 }] },
          { status: { loadBalancer: { ingress: [{ ip: '192.168.99.30', ipMode: 'Proxy' }] } } },
        ),
        slice('lb', [{ port: 80 }], ['10.244.1.10']),
      );
      assertUntouched(trace(tracerFor(state), OUTSIDE, '192.168.99.30', 80));
      assertReaches(trace(tracerFor(state), OUTSIDE, NODE_IP, 30030), ['10.244.1.10:80'], true);
    });
  });

  describe('services without endpoints', () => {
    const empty = () =>
      cluster(
        node('node1', [NODE_IP]),
        service('empty', {
          type: 'NodePort',
          clusterIP: '10.96.0.20',
          externalIPs: ['192.168.99.40'],
          ports: [
            { name: 'http', port: 80, nodePort: 30090 },
            { name: 'dns', port: 53, protocol: 'UDP', nodePort: 30053 },
          ],
        }),
        slice('empty', [{ name: 'http', port: 8080 }], [{ ip: '10.244.1.10', ready: false }]),
      );

    it('rejects on the ClusterIP from pods and from the node', () => {
      assertRejected(trace(tracerFor(empty()), POD, '10.96.0.20', 80), 'tcp reset');
      assertRejected(trace(tracerFor(empty()), NODE_IP, '10.96.0.20', 80), 'tcp reset');
      assertRejected(trace(tracerFor(empty()), POD, '10.96.0.20', 53, 'udp'), 'icmp port-unreachable');
    });

    it('rejects on NodePorts and external IPs', () => {
      assertRejected(trace(tracerFor(empty()), OUTSIDE, NODE_IP, 30090), 'tcp reset');
      assertRejected(trace(tracerFor(empty()), OUTSIDE, NODE_IP, 30053, 'udp'), 'icmp port-unreachable');
      assertRejected(trace(tracerFor(empty()), OUTSIDE, '192.168.99.40', 80), 'tcp reset');
    });

    it('rejects a local external IP too (input path)', () => {
      const t = compile(empty(), parseProxyConfig(BASE));
      const tracer = new Tracer(t.ruleset, { localAddresses: [NODE_IP, '192.168.99.40'] });
      assertRejected(
        tracer.trace({
          saddr: OUTSIDE,
          daddr: '192.168.99.40',
          dport: 80,
          protocol: 'tcp',
          entry: 'external',
        }),
        'tcp reset',
      );
    });

    it('does not reject a NodePort on loopback', () => {
      assertUntouched(trace(tracerFor(empty()), '127.0.0.1', '127.0.0.1', 30090, 'tcp', 'host'));
    });
  });

  describe('endpoint choice', () => {
    it('uses ready endpoints only, while any is ready', () => {
      const state = cluster(
        service('s', { clusterIP: '10.96.0.40', ports: [{ port: 80 }] }),
        slice(
          's',
          [{ port: 80 }],
          [
            '10.244.1.1',
            { ip: '10.244.1.2', ready: false },
            { ip: '10.244.1.3', ready: false, serving: true, terminating: true },
          ],
        ),
      );
      assertReaches(trace(tracerFor(state), POD, '10.96.0.40', 80), ['10.244.1.1:80'], false);
    });

    it('falls back to serving, terminating endpoints when none is ready', () => {
      const state = cluster(
        service('s', { clusterIP: '10.96.0.40', ports: [{ port: 80 }] }),
        slice(
          's',
          [{ port: 80 }],
          [
            { ip: '10.244.1.2', ready: false },
            { ip: '10.244.1.3', ready: false, serving: true, terminating: true },
            { ip: '10.244.1.4', ready: false, serving: false, terminating: true },
          ],
        ),
      );
      assertReaches(trace(tracerFor(state), POD, '10.96.0.40', 80), ['10.244.1.3:80'], false);
    });

    it('treats an unset serving condition as serving (kube-proxy), so terminating endpoints still drain', () => {
      const state = cluster(
        service('s', { clusterIP: '10.96.0.40', ports: [{ port: 80 }] }),
        slice('s', [{ port: 80 }], [{ ip: '10.244.1.3', ready: false, terminating: true }]),
      );
      assertReaches(trace(tracerFor(state), POD, '10.96.0.40', 80), ['10.244.1.3:80'], false);
    });

    it('resolves a named target port per slice', () => {
      const state = cluster(
        service('s', { clusterIP: '10.96.0.41', ports: [{ name: 'web', port: 80, targetPort: 'http' }] }),
        slice('s', [{ name: 'web', port: 8080 }], ['10.244.1.1']),
        slice('s', [{ name: 'web', port: 9090 }], ['10.244.2.1']),
        slice('s', [{ name: 'other', port: 7070 }], ['10.244.3.1']),
      );
      assertReaches(
        trace(tracerFor(state), POD, '10.96.0.41', 80),
        ['10.244.1.1:8080', '10.244.2.1:9090'],
        false,
      );
    });

    it('counts an endpoint listed in two slices once', () => {
      const state = cluster(
        service('s', { clusterIP: '10.96.0.42', ports: [{ port: 80 }] }),
        slice('s', [{ port: 80 }], ['10.244.1.1', '10.244.1.2']),
        slice('s', [{ port: 80 }], ['10.244.1.2']),
      );
      const r = trace(tracerFor(state), POD, '10.96.0.42', 80);
      assertReaches(r, ['10.244.1.1:80', '10.244.1.2:80'], false);
      assert.equal(r.outcomes.length, 2, 'two slots, not three');
    });

    it('ignores slices of another namespace with the same service name', () => {
      const state = cluster(
        service('s', { clusterIP: '10.96.0.43', ports: [{ port: 80 }] }),
        slice('s', [{ port: 80 }], ['10.244.1.1']),
        slice('s', [{ port: 80 }], ['10.244.9.9'], { namespace: 'other' }),
      );
      assertReaches(trace(tracerFor(state), POD, '10.96.0.43', 80), ['10.244.1.1:80'], false);
    });
  });

  describe('protocols', () => {
    it('forwards UDP and SCTP to their own target ports', () => {
      const state = cluster(
        service('dns', {
          clusterIP: '10.96.0.53',
          ports: [
            { name: 'dns', port: 53, protocol: 'UDP', targetPort: 5353 },
            { name: 'dns-tcp', port: 53, protocol: 'TCP', targetPort: 5354 },
            { name: 'sig', port: 3868, protocol: 'SCTP' },
          ],
        }),
        slice(
          'dns',
          [
            { name: 'dns', port: 5353, protocol: 'UDP' },
            { name: 'dns-tcp', port: 5354, protocol: 'TCP' },
            { name: 'sig', port: 3868, protocol: 'SCTP' },
          ],
          ['10.244.1.53'],
        ),
      );
      const t = tracerFor(state);
      assertReaches(trace(t, POD, '10.96.0.53', 53, 'udp'), ['10.244.1.53:5353'], false);
      assertReaches(trace(t, POD, '10.96.0.53', 53, 'tcp'), ['10.244.1.53:5354'], false);
      assertReaches(trace(t, POD, '10.96.0.53', 3868, 'sctp'), ['10.244.1.53:3868'], false);
    });
  });

  describe('IPv6 and dual stack', () => {
    const dual = () =>
      cluster(
        node('node1', [NODE_IP, NODE_IP6]),
        service('dual', {
          type: 'NodePort',
          clusterIPs: ['10.96.0.60', 'fd00:96::60'],
          ports: [{ port: 80, nodePort: 30060 }],
        }),
        slice('dual', [{ port: 80 }], ['10.244.1.60']),
        slice('dual', [{ port: 80 }], ['fd00:244::60', 'fd00:244::61']),
      );

    it('forwards each family to its own endpoints', () => {
      const t = tracerFor(dual());
      assertReaches(trace(t, POD, '10.96.0.60', 80), ['10.244.1.60:80'], false);
      assertReaches(trace(t, POD6, 'fd00:96::60', 80), ['[fd00:244::60]:80', '[fd00:244::61]:80'], false);
    });

    it('masquerades off-cluster IPv6 traffic and answers IPv6 NodePorts', () => {
      const t = tracerFor(dual());
      assertReaches(trace(t, OUTSIDE6, 'fd00:96::60', 80), ['[fd00:244::60]:80', '[fd00:244::61]:80'], true);
      assertReaches(trace(t, OUTSIDE6, NODE_IP6, 30060), ['[fd00:244::60]:80', '[fd00:244::61]:80'], true);
    });

    it('rejects IPv6 unused ports with ICMPv6', () => {
      assertRejected(trace(tracerFor(dual()), POD6, 'fd00:96::60', 81, 'udp'), 'icmpv6 port-unreachable');
    });

    it('never answers an IPv6 NodePort on ::1', () => {
      assertUntouched(trace(tracerFor(dual()), '::1', '::1', 30060, 'tcp', 'host'));
    });

    it('gives a single-stack service no IPv6 NodePort', () => {
      assertUntouched(trace(tracerFor(web()), OUTSIDE6, NODE_IP6, 30080));
    });
  });

  describe('services the proxy leaves alone', () => {
    it("skips headless, ExternalName and other proxies' services", () => {
      const state = cluster(
        service('headless', { clusterIP: 'None', ports: [{ port: 80 }] }),
        slice('headless', [{ port: 80 }], ['10.244.1.1']),
        service('ext', { type: 'ExternalName', externalName: 'example.com', ports: [{ port: 80 }] }),
        service(
          'mine',
          { clusterIP: '10.96.0.70', ports: [{ port: 80 }] },
          { labels: { 'service.kubernetes.io/service-proxy-name': 'other' } },
        ),
        slice('mine', [{ port: 80 }], ['10.244.1.2']),
      );
      const result = compile(state, parseProxyConfig(BASE));
      assert.equal(result.stats.services, 0);
      assert.equal(result.stats.skipped, 3);
      assertUntouched(trace(tracerFor(state), POD, '10.96.0.70', 80));
    });

    it('with --service-proxy-name, takes only the services labelled with that name', () => {
      const labelled = (name: string, ip: string, proxy?: string) => [
        service(
          name,
          { clusterIP: ip, ports: [{ port: 80 }] },
          proxy ? { labels: { 'service.kubernetes.io/service-proxy-name': proxy } } : {},
        ),
        slice(name, [{ port: 80 }], ['10.244.1.2']),
      ];
      const state = cluster(
        ...labelled('plain', '10.96.0.71'),
        ...labelled('ours', '10.96.0.72', 'nftproxy'),
        ...labelled('theirs', '10.96.0.73', 'other'),
      );
      const reached = (config: Partial<ProxyConfigInput>) =>
        ['10.96.0.71', '10.96.0.72', '10.96.0.73'].filter(
          (ip) => trace(tracerFor(state, config), POD, ip, 80).endpoints.length > 0,
        );
      assert.deepEqual(reached({}), ['10.96.0.71']);
      assert.deepEqual(reached({ serviceProxyName: 'nftproxy' }), ['10.96.0.72']);
      assert.throws(
        () => parseProxyConfig({ ...BASE, serviceProxyName: 'no spaces' }),
        /not a valid label value/,
      );
    });
  });

  describe('conflicts', () => {
    it('gives a contested external IP:port to the first service and reports the other', () => {
      const state = cluster(
        service('a', { clusterIP: '10.96.0.80', externalIPs: ['192.168.99.80'], ports: [{ port: 80 }] }),
        slice('a', [{ port: 80 }], ['10.244.1.1']),
        service('b', { clusterIP: '10.96.0.81', externalIPs: ['192.168.99.80'], ports: [{ port: 80 }] }),
        slice('b', [{ port: 80 }], ['10.244.1.2']),
      );
      const result = compile(state, parseProxyConfig(BASE));
      const errors = result.diagnostics.filter((d) => d.severity === 'error');
      assert.equal(errors.length, 1);
      assert.match(errors[0]!.object, /default\/b/);
      assert.match(errors[0]!.message, /192\.168\.99\.80:80\/TCP is already used by Service default\/a/);
      const t = tracerFor(state);
      assertReaches(trace(t, OUTSIDE, '192.168.99.80', 80), ['10.244.1.1:80'], true);
      assertReaches(trace(t, POD, '10.96.0.81', 80), ['10.244.1.2:80'], false);
    });

    it('never lets an external IP take another service’s ClusterIP, whatever the order', () => {
      const state = () =>
        cluster(
          service('web', { clusterIP: '10.96.0.90', ports: [{ port: 80 }] }, { namespace: 'shop' }),
          slice('web', [{ port: 80 }], ['10.244.1.90'], { namespace: 'shop' }),
          // `aaa` sorts first: by name order it would win.
          service(
            'thief',
            { clusterIP: '10.96.0.91', externalIPs: ['10.96.0.90'], ports: [{ port: 80 }] },
            { namespace: 'aaa' },
          ),
          slice('thief', [{ port: 80 }], ['10.244.1.91'], { namespace: 'aaa' }),
        );
      const result = compile(state(), parseProxyConfig(BASE));
      const errors = result.diagnostics.filter((d) => d.severity === 'error');
      assert.equal(errors.length, 1, JSON.stringify(result.diagnostics));
      assert.equal(errors[0]!.object, 'Service aaa/thief');
      assert.match(
        errors[0]!.message,
        /10\.96\.0\.90:80\/TCP is already used by Service shop\/web \(its ClusterIP\)/,
      );
      assertReaches(trace(tracerFor(state()), POD, '10.96.0.90', 80), ['10.244.1.90:80'], false);

      // Built one service at a time, in either order, the ClusterIP ends up owning it.
      const s = state();
      for (const order of [
        [0, 1],
        [1, 0],
      ]) {
        const b = new RulesetBuilder(parseProxyConfig(BASE), []);
        for (const i of order) {
          const svc = s.services[i]!;
          const key = `${svc.metadata.namespace}/${svc.metadata.name}`;
          b.setService(
            key,
            compileService(
              svc,
              s.endpointSlices.filter((e) => e.metadata.namespace === svc.metadata.namespace),
            ),
          );
        }
        const owner = b.units().find((u) => u.claim === '10.96.0.90 . tcp . 80');
        assert.equal(owner?.service, 'shop/web', `order ${order.join(',')}`);
        // Removing the ClusterIP's service hands the address to the external IP.
        b.setService('shop/web', undefined);
        assert.equal(b.units().find((u) => u.claim === '10.96.0.90 . tcp . 80')?.service, 'aaa/thief');
      }
    });

    it('refuses external and LB IPs inside the service CIDRs', () => {
      const state = cluster(
        service(
          'odd',
          {
            type: 'LoadBalancer',
            clusterIP: '10.96.0.92',
            externalIPs: ['10.96.0.200', '192.168.99.92'],
            ports: [{ port: 80, nodePort: 30092 }],
          },
          { status: { loadBalancer: { ingress: [{ ip: '10.96.0.201' }] } } },
        ),
        slice('odd', [{ port: 80 }], ['10.244.1.92']),
      );
      const config = { serviceCIDRs: ['10.96.0.0/16'] };
      const result = compile(state, parseProxyConfig({ ...BASE, ...config }));
      assert.deepEqual(
        result.diagnostics.map((d) => `${d.field}: ${d.message}`),
        [
          'spec.externalIPs[0]: 10.96.0.200 is ignored: it is inside the service CIDR 10.96.0.0/16, where only ClusterIPs belong',
          'status.loadBalancer.ingress: 10.96.0.201 is ignored: it is inside the service CIDR 10.96.0.0/16, where only ClusterIPs belong',
        ],
      );
      const t = tracerFor(state, config);
      assert.deepEqual(
        trace(t, POD, '10.96.0.200', 80).outcomes.map((o) => o.verdict),
        ['drop'],
      );
      assertReaches(trace(t, OUTSIDE, '192.168.99.92', 80), ['10.244.1.92:80'], true);
      // Without service CIDRs the same addresses are programmed.
      assertReaches(trace(tracerFor(state), OUTSIDE, '10.96.0.200', 80), ['10.244.1.92:80'], true);
    });
  });
});
