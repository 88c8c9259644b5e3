/**
 * Tracer tests of the traffic features: session affinity, traffic policies Local, source
 * ranges, topology hints, and what ProxyPolicy changes (schedulers, weights, Maglev,
 * masquerade, affinity override, source ranges, precedence).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { maglevTable } from '../../src/proxy/policy.js';
import { compile, type CompileResult } from '../../src/proxy/compile.js';
import { parseProxyConfig, type ProxyConfigInput } from '../../src/proxy/config.js';
import { Maps, Sets, TABLE } from '../../src/proxy/names.js';
import { concat } from '../../src/nft/ir.js';
import { elemKey, tableKey } from '../../src/nft/ruleset.js';
import { type Entry, Tracer, type TraceResult } from '../../src/nft/tracer.js';
import type { ClusterState } from '../../src/k8s/types.js';
import { cluster, node, policy, service, slice } from '../support/cluster.js';

const NODE_IP = '192.168.50.1';
const POD = '10.244.1.50';
const OUTSIDE = '192.168.50.2';
const FAR = '203.0.113.9';
const LB = '198.51.100.10';
const EXT = '198.51.100.20';

const BASE: ProxyConfigInput = { nodeName: 'node1', clusterCIDRs: ['10.244.0.0/16'] };

function build(state: ClusterState, config: Partial<ProxyConfigInput> = {}): CompileResult {
  return compile(state, parseProxyConfig({ ...BASE, ...config }));
}

function tracer(r: CompileResult): Tracer {
  return new Tracer(r.ruleset, { localAddresses: [NODE_IP, '127.0.0.1'] });
}

function trace(t: Tracer, from: string, to: string, port: number, entry?: Entry): TraceResult {
  const e: Entry = entry ?? (from === NODE_IP ? 'host' : from.startsWith('10.244.') ? 'pod' : 'external');
  return t.trace({ saddr: from, daddr: to, dport: port, protocol: 'tcp', entry: e });
}

/** Outcomes per endpoint: each outcome is one slot of the pick. */
function slotShares(r: TraceResult): Map<string, number> {
  const out = new Map<string, number>();
  for (const o of r.outcomes) {
    if (o.verdict !== 'accept' || !o.dnat) continue;
    const k = `${o.dnat.addr}:${o.dnat.port}`;
    out.set(k, (out.get(k) ?? 0) + 1);
  }
  return out;
}

function verdicts(r: TraceResult): string[] {
  return [...new Set(r.outcomes.map((o) => o.verdict))];
}

const ipTable = (r: CompileResult) => r.ruleset.tables.get(tableKey('ip', TABLE))!;

/** web: 3 endpoints, one on this node. */
function web(spec: Record<string, unknown> = {}, labels?: Record<string, string>) {
  return [
    service(
      'web',
      {
        type: 'LoadBalancer',
        clusterIP: '10.96.0.10',
        externalIPs: [EXT],
        ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30080 }],
        ...spec,
      },
      { status: { loadBalancer: { ingress: [{ ip: LB }] } }, ...(labels ? { labels } : {}) },
    ),
    slice(
      'web',
      [{ name: 'http', port: 8080 }],
      [
        { ip: '10.244.1.10', node: 'node1', zone: 'a', hostname: 'web-0', pod: 'web-0' },
        { ip: '10.244.2.10', node: 'node2', zone: 'b', hostname: 'web-1', pod: 'web-1' },
        { ip: '10.244.3.10', node: 'node3', zone: 'b', hostname: 'web-2', pod: 'web-2' },
      ],
    ),
  ];
}

const ALL = ['10.244.1.10:8080', '10.244.2.10:8080', '10.244.3.10:8080'];

describe('traffic features', () => {
  describe('sessionAffinity ClientIP', () => {
    const r = build(cluster(...web({ sessionAffinity: 'ClientIP' })));
    const t = ipTable(r);

    it('marks every address of the service for affinity with the default 3 h timeout', () => {
      const guard = t.sets.get(Sets.affinityServices)!;
      assert.ok(guard.elems.has(elemKey(concat('10.96.0.10', 'tcp', 80))));
      assert.ok(guard.elems.has(elemKey(concat(LB, 'tcp', 80))));
      assert.ok(t.sets.get(Sets.affinityNodeports)!.elems.has(elemKey(concat('tcp', 30080))));
      const timeouts = t.sets.get(Maps.affinityTimeouts)!;
      assert.deepEqual(timeouts.elems.get(elemKey(concat('10.96.0.10', 'tcp', 80))), [
        concat('10.96.0.10', 'tcp', 80),
        { goto: { target: 'affinity-10800' } },
      ]);
      assert.ok(t.chains.has('affinity-10800'));
    });

    it('records the endpoint a new connection got, and sends the client back to it', () => {
      const first = trace(tracer(r), POD, '10.96.0.10', 80);
      assert.deepEqual(first.endpoints, ALL);
      assert.ok(first.outcomes.every((o) => o.path.some((s) => s.includes('remembered for 10800s'))));
      // What the kernel's update would have stored for this client:
      const withEntry = structuredClone(r.ruleset);
      const aff = withEntry.tables.get(tableKey('ip', TABLE))!.sets.get(Maps.affinity)!;
      const entry: [ReturnType<typeof concat>, ReturnType<typeof concat>] = [
        concat(POD, '10.96.0.10', 'tcp', 80),
        concat('10.244.3.10', 8080),
      ];
      aff.elems.set(elemKey(entry), entry);
      const t2 = new Tracer(withEntry, { localAddresses: [NODE_IP, '127.0.0.1'] });
      assert.deepEqual(trace(t2, POD, '10.96.0.10', 80).endpoints, ['10.244.3.10:8080']);
      // Another client is not affected.
      assert.deepEqual(trace(t2, '10.244.9.9', '10.96.0.10', 80).endpoints, ALL);
    });

    it('uses sessionAffinityConfig.clientIP.timeoutSeconds', () => {
      const r2 = build(
        cluster(
          ...web({
            sessionAffinity: 'ClientIP',
            sessionAffinityConfig: { clientIP: { timeoutSeconds: 60 } },
          }),
        ),
      );
      assert.ok(ipTable(r2).chains.has('affinity-60'));
      assert.ok(!ipTable(r2).chains.has('affinity-10800'));
    });

    it('is off without ClientIP', () => {
      assert.equal(ipTable(build(cluster(...web()))).sets.get(Sets.affinityServices)!.elems.size, 0);
    });
  });

  describe('externalTrafficPolicy Local', () => {
    const state = cluster(...web({ externalTrafficPolicy: 'Local', healthCheckNodePort: 32000 }));

    it('sends outside clients to this node’s endpoints only, keeping their address', () => {
      const t = tracer(build(state));
      for (const [to, port] of [
        [NODE_IP, 30080],
        [LB, 80],
        [EXT, 80],
      ] as const) {
        const res = trace(t, FAR, to, port);
        assert.deepEqual(res.endpoints, ['10.244.1.10:8080'], `${to}:${port}`);
        assert.ok(
          res.outcomes.every((o) => !o.masquerade),
          `${to}:${port} masqueraded`,
        );
      }
    });

    it('drops outside clients on a node without local endpoints', () => {
      const t = tracer(build(state, { nodeName: 'node9' }));
      for (const [to, port] of [
        [NODE_IP, 30080],
        [LB, 80],
      ] as const) {
        assert.deepEqual(verdicts(trace(t, FAR, to, port)), ['drop'], `${to}:${port}`);
      }
    });

    it('lets pods and the node itself reach every endpoint', () => {
      const t = tracer(build(state, { nodeName: 'node9' }));
      assert.deepEqual(trace(t, POD, LB, 80).endpoints, ALL);
      assert.deepEqual(trace(t, POD, NODE_IP, 30080).endpoints, ALL);
      assert.deepEqual(trace(t, NODE_IP, LB, 80).endpoints, ALL);
    });

    it('masquerades the node itself, and only the node, on its external addresses', () => {
      const t = tracer(build(state));
      for (const [to, port] of [
        [LB, 80],
        [EXT, 80],
        [NODE_IP, 30080],
      ] as const) {
        const fromNode = trace(t, NODE_IP, to, port);
        assert.ok(fromNode.outcomes.length > 0, `${to}:${port} from the node reaches nothing`);
        assert.ok(
          fromNode.outcomes.every((o) => o.masquerade),
          `${to}:${port} from the node kept its address: ${fromNode.outcomes[0]!.path.join(' | ')}`,
        );
        assert.ok(
          trace(t, POD, to, port).outcomes.every((o) => !o.masquerade),
          `${to}:${port} from a pod masqueraded`,
        );
      }
      // The ClusterIP is not an external address: the node is masqueraded there only as an
      // off-cluster source, as for any service.
      const viaClusterIP = trace(t, POD, '10.96.0.10', 80);
      assert.ok(viaClusterIP.outcomes.every((o) => !o.masquerade));
    });

    it('leaves the ClusterIP alone', () => {
      const t = tracer(build(state, { nodeName: 'node9' }));
      assert.deepEqual(trace(t, POD, '10.96.0.10', 80).endpoints, ALL);
    });

    it('rejects when the service has no endpoints at all', () => {
      const t = tracer(build(cluster(web({ externalTrafficPolicy: 'Local' })[0]!)));
      assert.deepEqual(verdicts(trace(t, FAR, LB, 80)), ['reject']);
    });
  });

  describe('internalTrafficPolicy Local', () => {
    it('sends ClusterIP traffic to this node’s endpoints only', () => {
      const t = tracer(build(cluster(...web({ internalTrafficPolicy: 'Local' }))));
      assert.deepEqual(trace(t, POD, '10.96.0.10', 80).endpoints, ['10.244.1.10:8080']);
      // External addresses are not internal traffic.
      assert.deepEqual(trace(t, FAR, LB, 80).endpoints, ALL);
    });

    it('drops ClusterIP traffic on a node without local endpoints, rejects without any', () => {
      const t = tracer(build(cluster(...web({ internalTrafficPolicy: 'Local' })), { nodeName: 'node9' }));
      assert.deepEqual(verdicts(trace(t, POD, '10.96.0.10', 80)), ['drop']);
      const none = tracer(build(cluster(web({ internalTrafficPolicy: 'Local' })[0]!)));
      assert.deepEqual(verdicts(trace(none, POD, '10.96.0.10', 80)), ['reject']);
    });
  });

  describe('loadBalancerSourceRanges', () => {
    const t = tracer(build(cluster(...web({ loadBalancerSourceRanges: ['203.0.113.0/24'] }))));

    it('admits allowed sources to the load balancer IP', () => {
      assert.deepEqual(trace(t, FAR, LB, 80).endpoints, ALL);
    });

    it('drops other sources before DNAT', () => {
      const res = trace(t, OUTSIDE, LB, 80);
      assert.deepEqual(verdicts(res), ['drop']);
      assert.ok(res.outcomes[0]!.path.some((s) => s.includes('firewall-check')));
    });

    it('does not restrict the other addresses of the service', () => {
      assert.deepEqual(trace(t, OUTSIDE, EXT, 80).endpoints, ALL);
      assert.deepEqual(trace(t, OUTSIDE, NODE_IP, 30080).endpoints, ALL);
      assert.deepEqual(trace(t, POD, '10.96.0.10', 80).endpoints, ALL);
    });
  });

  describe('topology hints', () => {
    const hinted = (hints: ({ zones?: string[]; nodes?: string[] } | undefined)[]) =>
      cluster(
        service('web', { clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80, targetPort: 8080 }] }),
        slice(
          'web',
          [{ name: 'http', port: 8080 }],
          ['10.244.1.10', '10.244.2.10', '10.244.3.10'].map((ip, i) => ({
            ip,
            node: `node${i + 1}`,
            ...(hints[i] ? { hints: hints[i] } : {}),
          })),
        ),
        node('node1', [NODE_IP], { zone: 'b' }),
      );

    it('uses the endpoints hinted for this node’s zone', () => {
      const t = tracer(build(hinted([{ zones: ['a'] }, { zones: ['b'] }, { zones: ['b'] }])));
      assert.deepEqual(trace(t, POD, '10.96.0.10', 80).endpoints, ['10.244.2.10:8080', '10.244.3.10:8080']);
    });

    it('ignores hints when an endpoint has none, or none is for this zone', () => {
      const partial = tracer(build(hinted([{ zones: ['a'] }, undefined, { zones: ['b'] }])));
      assert.deepEqual(trace(partial, POD, '10.96.0.10', 80).endpoints, ALL);
      const elsewhere = tracer(build(hinted([{ zones: ['a'] }, { zones: ['a'] }, { zones: ['c'] }])));
      assert.deepEqual(trace(elsewhere, POD, '10.96.0.10', 80).endpoints, ALL);
    });

    it('prefers node hints (PreferSameNode) over zone hints', () => {
      const t = tracer(
        build(
          hinted([
            { nodes: ['node1'], zones: ['b'] },
            { nodes: ['node2'], zones: ['b'] },
            { nodes: ['node3'], zones: ['b'] },
          ]),
        ),
      );
      assert.deepEqual(trace(t, POD, '10.96.0.10', 80).endpoints, ['10.244.1.10:8080']);
    });
  });
});

describe('ProxyPolicy in the ruleset', () => {
  const byName = { serviceNames: ['web'] };

  it('roundRobin and sourceHash use their own pick chains', () => {
    for (const [type, rule] of [
      ['roundRobin', 'numgen inc mod 3'],
      ['sourceHash', 'jhash ip saddr mod 3 seed 0x6e667078'],
    ] as const) {
      const r = build(
        cluster(...web(), policy(`p-${type.toLowerCase()}`, { selector: byName, scheduler: { type } })),
      );
      const res = trace(tracer(r), POD, '10.96.0.10', 80);
      assert.deepEqual(res.endpoints, ALL);
      assert.ok(
        res.outcomes[0]!.path.some((s) => s.includes(rule)),
        `${type}: ${res.outcomes[0]!.path.join(' | ')}`,
      );
      assert.equal(r.entries.find((e) => e.address === '10.96.0.10')!.scheduler, type);
    }
  });

  it('weighted: slots in proportion to weights by zone, node, hostname or pod', () => {
    const r = build(
      cluster(
        ...web(),
        policy('weights', {
          selector: byName,
          scheduler: {
            type: 'weighted',
            weights: [
              { match: { zone: 'a' }, weight: 3 },
              { match: { targetRef: 'web-2' }, weight: 0 },
            ],
          },
        }),
      ),
    );
    const shares = slotShares(trace(tracer(r), POD, '10.96.0.10', 80));
    assert.deepEqual(Object.fromEntries(shares), { '10.244.1.10:8080': 3, '10.244.2.10:8080': 1 });
  });

  it('weighted: large weight sums are apportioned into 100 slots', () => {
    const r = build(
      cluster(
        ...web(),
        policy('weights', {
          selector: byName,
          scheduler: {
            type: 'weighted',
            weights: [
              { match: { hostname: 'web-0' }, weight: 97 },
              { match: { node: 'node2' }, weight: 2 },
            ],
          },
        }),
      ),
    );
    const shares = slotShares(trace(tracer(r), POD, '10.96.0.10', 80));
    assert.deepEqual(Object.fromEntries(shares), {
      '10.244.1.10:8080': 97,
      '10.244.2.10:8080': 2,
      '10.244.3.10:8080': 1,
    });
  });

  it('maglev: a prime-sized table shared out evenly', () => {
    const r = build(cluster(...web(), policy('mg', { selector: byName, scheduler: { type: 'maglev' } })));
    const shares = slotShares(trace(tracer(r), POD, '10.96.0.10', 80));
    assert.equal(
      [...shares.values()].reduce((a, b) => a + b, 0),
      251,
    );
    for (const n of shares.values()) assert.ok(n >= 83 && n <= 84, `share ${n}`);
  });

  it('masquerade always and never', () => {
    const always = tracer(build(cluster(...web(), policy('m', { selector: byName, masquerade: 'always' }))));
    assert.ok(trace(always, POD, '10.96.0.10', 80).outcomes.every((o) => o.masquerade));
    const never = tracer(build(cluster(...web(), policy('m', { selector: byName, masquerade: 'never' }))));
    assert.ok(trace(never, FAR, '10.96.0.10', 80).outcomes.every((o) => !o.masquerade));
    assert.ok(trace(never, FAR, NODE_IP, 30080).outcomes.every((o) => !o.masquerade));
  });

  it('overrides session affinity', () => {
    const r = build(
      cluster(
        ...web(),
        policy('aff', { selector: byName, sessionAffinity: { type: 'ClientIP', timeoutSeconds: 300 } }),
      ),
    );
    assert.ok(ipTable(r).chains.has('affinity-300'));
    const off = build(
      cluster(
        ...web({ sessionAffinity: 'ClientIP' }),
        policy('aff', { selector: byName, sessionAffinity: { type: 'None' } }),
      ),
    );
    assert.equal(ipTable(off).sets.get(Sets.affinityServices)!.elems.size, 0);
  });

  it('source ranges apply to NodePorts and external IPs, deny first, ClusterIP untouched', () => {
    const t = tracer(
      build(
        cluster(
          ...web(),
          policy('fw', {
            selector: byName,
            sourceRanges: { allow: ['192.168.50.0/24', '203.0.113.0/24'], deny: ['192.168.50.2/32'] },
          }),
        ),
      ),
    );
    assert.deepEqual(trace(t, FAR, NODE_IP, 30080).endpoints, ALL);
    assert.deepEqual(trace(t, FAR, EXT, 80).endpoints, ALL);
    assert.deepEqual(verdicts(trace(t, OUTSIDE, NODE_IP, 30080)), ['drop']);
    assert.deepEqual(verdicts(trace(t, OUTSIDE, EXT, 80)), ['drop']);
    assert.deepEqual(verdicts(trace(t, '198.18.0.1', LB, 80)), ['drop']);
    assert.deepEqual(trace(t, POD, '10.96.0.10', 80).endpoints, ALL);
  });

  it('intersects its allow list with loadBalancerSourceRanges on LB IPs', () => {
    const t = tracer(
      build(
        cluster(
          ...web({ loadBalancerSourceRanges: ['203.0.113.0/24'] }),
          policy('fw', { selector: byName, sourceRanges: { allow: ['203.0.113.0/28', '192.168.50.0/24'] } }),
        ),
      ),
    );
    assert.deepEqual(trace(t, FAR, LB, 80).endpoints, ALL); // .9 is in both
    assert.deepEqual(verdicts(trace(t, '203.0.113.99', LB, 80)), ['drop']); // only in the service's
    assert.deepEqual(verdicts(trace(t, OUTSIDE, LB, 80)), ['drop']); // only in the policy's
  });

  it('selects by labels, and a policy naming the service wins over one selecting by labels', () => {
    const state = cluster(
      ...web({}, { tier: 'front' }),
      policy('by-labels', {
        selector: { serviceSelector: { matchLabels: { tier: 'front' } } },
        scheduler: { type: 'sourceHash' },
      }),
      policy('by-name', { selector: byName, scheduler: { type: 'roundRobin' } }),
    );
    const e = build(state).entries.find((x) => x.address === '10.96.0.10')!;
    assert.equal(e.policy, 'default/by-name');
    assert.equal(e.scheduler, 'roundRobin');
  });

  it('between two label selectors, the older policy wins', () => {
    const sel = { serviceSelector: { matchExpressions: [{ key: 'tier', operator: 'Exists' }] } };
    const state = cluster(
      ...web({}, { tier: 'front' }),
      policy(
        'young',
        { selector: sel, scheduler: { type: 'roundRobin' } },
        { created: '2026-05-01T00:00:00Z' },
      ),
      policy('old', { selector: sel, scheduler: { type: 'maglev' } }, { created: '2026-01-01T00:00:00Z' }),
    );
    assert.equal(build(state).entries.find((x) => x.address === '10.96.0.10')!.policy, 'default/old');
  });

  it('selects only services of its own namespace; an invalid policy selects nothing', () => {
    const other = build(
      cluster(
        ...web(),
        policy('p', { selector: byName, scheduler: { type: 'roundRobin' } }, { namespace: 'other' }),
      ),
    );
    assert.equal(other.entries.find((x) => x.address === '10.96.0.10')!.scheduler, 'random');
    const bad = policy('bad', { selector: byName, scheduler: { type: 'fastest' } });
    assert.ok(bad.problems.length > 0);
    assert.equal(
      build(cluster(...web(), bad)).entries.find((x) => x.address === '10.96.0.10')!.scheduler,
      'random',
    );
  });
});

describe('Maglev remapping over 10,000 simulated clients', () => {
  // The kernel picks slot jhash(saddr) mod size; any uniform hash of the client stands in.
  const slotOf = (client: string, size: number) =>
    createHash('sha256').update(client).digest().readUInt32BE(0) % size;
  const clients = Array.from(
    { length: 10_000 },
    (_, i) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
  );

  /** Fraction of clients whose backend changes when `gone` leaves, under a table builder. */
  function remapped(names: string[], gone: string, table: (names: string[]) => number[]): number {
    const before = table(names).map((i) => names[i]!);
    const rest = names.filter((n) => n !== gone);
    const after = table(rest).map((i) => rest[i]!);
    let moved = 0;
    for (const c of clients) {
      if (before[slotOf(c, before.length)] !== after[slotOf(c, after.length)]) moved++;
    }
    return moved / clients.length;
  }

  for (const n of [5, 10]) {
    it(`removing one of ${n} endpoints moves about 1/${n} of clients with maglev, most with hash mod N`, () => {
      const names = Array.from({ length: n }, (_, i) => `10.244.1.${10 + i}|8080`);
      const gone = names[Math.floor(n / 2)]!;
      const maglev = remapped(names, gone, (ns) => maglevTable(ns, 1021));
      const modN = remapped(names, gone, (ns) => ns.map((_, i) => i));
      console.log(
        `      ${n} endpoints, one removed: maglev moved ${(maglev * 100).toFixed(1)}%, hash mod N moved ${(modN * 100).toFixed(1)}% (ideal ${(100 / n).toFixed(1)}%)`,
      );
      assert.ok(
        maglev >= 1 / n - 0.03,
        `maglev ${maglev}: at least the clients of the removed endpoint move`,
      );
      assert.ok(maglev <= 1 / n + 0.05, `maglev ${maglev} close to 1/${n}`);
      assert.ok(modN >= 0.5, `hash mod N ${modN} moves most clients`);
    });
  }
});
