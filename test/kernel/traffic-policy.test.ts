/**
 * @kernel Traffic features with real connections between namespaces: session affinity,
 * externalTrafficPolicy / internalTrafficPolicy Local, source ranges, and ProxyPolicy
 * schedulers (weighted shares, hashing, round robin). Topology in test/support/netns.ts.
 */
import assert from 'node:assert/strict';
import { compile } from '../../src/proxy/compile.js';
import { parseProxyConfig } from '../../src/proxy/config.js';
import { diffRulesets } from '../../src/nft/diff.js';
import { ExecBackend } from '../../src/nft/exec.js';
import { compareRulesets, emptyRuleset, type Ruleset, tableKey } from '../../src/nft/ruleset.js';
import { FAMILIES, Maps, TABLE } from '../../src/proxy/names.js';
import { ClusterStore } from '../../src/k8s/store.js';
import { Syncer } from '../../src/controller/syncer.js';
import { AffinityCleaner } from '../../src/controller/affinity.js';
import type { ClusterState } from '../../src/k8s/types.js';
import { cluster, node, policy, service, slice } from '../support/cluster.js';
import {
  createTopology,
  requireKernel,
  probe,
  type ProbeResult,
  startEchoServer,
  tally,
  type Topology,
} from '../support/netns.js';

const LB = '198.51.100.10';
const EXT = '198.51.100.20';
/** Extra addresses of the external host: 30 different clients. */
const CLIENTS = Array.from({ length: 30 }, (_, i) => `192.168.50.${100 + i}`);

function clusterFor(t: Topology): ClusterState {
  const [a, b, c] = t.pods;
  const eps = (node2: boolean) => [
    { ip: a!.ip, node: 'node1', pod: 'pod-a', zone: 'a' },
    { ip: b!.ip, node: node2 ? 'node2' : 'node1', pod: 'pod-b', zone: 'b' },
    { ip: c!.ip, node: 'node2', pod: 'pod-c', zone: 'b' },
  ];
  const svc = (name: string, ip: string, spec: Record<string, unknown>, labels?: Record<string, string>) => [
    service(
      name,
      { clusterIP: ip, ports: [{ name: 'http', port: 80, targetPort: 8080 }], ...spec },
      {
        ...(labels ? { labels } : {}),
        ...(spec.type === 'LoadBalancer' ? { status: { loadBalancer: { ingress: [{ ip: LB }] } } } : {}),
      },
    ),
    slice(name, [{ name: 'http', port: 8080 }], eps(true)),
  ];
  return cluster(
    node('node1', [t.nodeIP]),
    ...svc('sticky', '10.96.0.60', { sessionAffinity: 'ClientIP', externalIPs: [EXT] }),
    ...svc('local', '10.96.0.61', {
      type: 'LoadBalancer',
      externalTrafficPolicy: 'Local',
      ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30070 }],
    }),
    ...svc('internal', '10.96.0.62', { internalTrafficPolicy: 'Local' }),
    ...svc('guarded', '10.96.0.63', {
      type: 'NodePort',
      externalIPs: ['198.51.100.30'],
      ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30071 }],
    }),
    policy('deny-ext', {
      selector: { serviceNames: ['guarded'] },
      sourceRanges: { deny: ['192.168.50.2/32'] },
    }),
    ...svc('weighted', '10.96.0.64', {}, { app: 'weighted' }),
    policy('weights', {
      selector: { serviceSelector: { matchLabels: { app: 'weighted' } } },
      scheduler: {
        type: 'weighted',
        weights: [
          { match: { targetRef: 'pod-a' }, weight: 3 },
          { match: { zone: 'b' }, weight: 1 },
          { match: { targetRef: 'pod-c' }, weight: 5 }, // never reached: zone b matched first
        ],
      },
    }),
    ...svc('hashed', '10.96.0.65', { externalIPs: ['198.51.100.40'] }),
    policy('maglev', { selector: { serviceNames: ['hashed'] }, scheduler: { type: 'maglev' } }),
    ...svc('turns', '10.96.0.66', {}),
    policy('rr', { selector: { serviceNames: ['turns'] }, scheduler: { type: 'roundRobin' } }),
  );
}

async function readBack(nft: ExecBackend): Promise<Ruleset> {
  const r = emptyRuleset();
  for (const f of FAMILIES) {
    const tb = await nft.listTable(f, TABLE);
    if (tb) r.tables.set(tableKey(f, TABLE), tb);
  }
  return r;
}

const servers = (results: ProbeResult[]) => Object.keys(tally(results)).sort();

describe('@kernel traffic features and ProxyPolicy in a network namespace', function () {
  this.timeout(180_000);
  let t: Topology;
  let nft: ExecBackend;
  let applied: Ruleset;
  const stops: (() => Promise<void>)[] = [];
  const config = (nodeName: string) => parseProxyConfig({ nodeName, clusterCIDRs: ['10.244.0.0/16'] });

  before(async function () {
    requireKernel(this);
    t = await createTopology(3);
    try {
      await t.external.sh(CLIENTS.map((ip) => `ip addr add ${ip}/24 dev eth0`).join('\n'));
      for (const p of t.pods) stops.push(await startEchoServer(p, { tcp: [8080] }));
      nft = new ExecBackend({ command: t.node.nftCommand });
      applied = compile(clusterFor(t), config('node1')).ruleset;
      await nft.apply(diffRulesets(undefined, applied).tx);
    } catch (e) {
      await Promise.all(stops.map((s) => s()));
      await t.destroy();
      throw e;
    }
  });

  after(async () => {
    await Promise.all(stops.map((s) => s()));
    await t?.destroy();
  });

  it('reads back exactly what it applied, affinity updates included', async () => {
    assert.deepEqual(compareRulesets(applied, await readBack(nft)), []);
    assert.deepEqual(diffRulesets(await readBack(nft), applied).tx.commands, []);
  });

  it('affinity: one client, 50 connections, one backend', async () => {
    const results = await probe(t.client.ns, { host: '10.96.0.60', port: 80 }, 50);
    assert.ok(results.every((r) => r.ok));
    assert.equal(servers(results).length, 1, JSON.stringify(tally(results)));
  });

  it('affinity: many clients spread over the backends, each one sticky', async () => {
    const results = await probe(t.external, { host: EXT, port: 80 }, CLIENTS.length * 3, 2000, CLIENTS);
    assert.ok(
      results.every((r) => r.ok),
      JSON.stringify(tally(results)),
    );
    const byClient = new Map<string, Set<string>>();
    results.forEach((r, i) => {
      const c = CLIENTS[i % CLIENTS.length]!;
      byClient.set(c, (byClient.get(c) ?? new Set()).add(r.server!));
    });
    for (const [c, s] of byClient) assert.equal(s.size, 1, `${c} reached ${[...s].join(', ')}`);
    assert.ok(servers(results).length >= 2, JSON.stringify(tally(results)));
  });

  it('externalTrafficPolicy Local: outside clients reach this node’s endpoints, with their own address', async () => {
    for (const [host, port] of [
      [t.nodeIP, 30070],
      [LB, 80],
    ] as const) {
      const results = await probe(t.external, { host, port }, 20);
      assert.deepEqual(tally(results), { 'pod-a': 20 }, `${host}:${port}`);
      assert.ok(
        results.every((r) => r.seenFrom === t.externalIP),
        `${host}:${port}: source kept`,
      );
    }
  });

  it('externalTrafficPolicy Local: the node itself is masqueraded, a pod is not', async () => {
    // The node reaches the LB IP from 192.168.50.1 (its route there); masqueraded, the
    // endpoint sees the node's address on the pod side instead.
    const podSide = '10.244.1.1';
    for (const [host, port] of [
      [LB, 80],
      [t.nodeIP, 30070],
    ] as const) {
      const fromNode = await probe(t.node, { host, port }, 10);
      assert.ok(
        fromNode.every((r) => r.ok && r.seenFrom === podSide),
        `${host}:${port} from the node: ${JSON.stringify(fromNode)}`,
      );
      const fromPod = await probe(t.client.ns, { host, port }, 10);
      assert.ok(
        fromPod.every((r) => r.ok && r.seenFrom === t.client.ip),
        `${host}:${port} from a pod: ${JSON.stringify(fromPod)}`,
      );
    }
  });

  it('internalTrafficPolicy Local: ClusterIP traffic stays on this node', async () => {
    const results = await probe(t.client.ns, { host: '10.96.0.62', port: 80 }, 20);
    assert.deepEqual(servers(results), ['pod-a']);
  });

  it('source ranges: a denied source gets nothing on NodePort and external IP, others pass', async () => {
    for (const [host, port] of [
      [t.nodeIP, 30071],
      ['198.51.100.30', 80],
    ] as const) {
      const denied = await probe(t.external, { host, port }, 3, 700);
      assert.ok(
        denied.every((r) => r.error === 'ETIMEDOUT'),
        `${host}:${port}: ${JSON.stringify(denied)}`,
      );
      const allowed = await probe(t.external, { host, port }, 5, 2000, [CLIENTS[0]!]);
      assert.ok(
        allowed.every((r) => r.ok),
        `${host}:${port}: ${JSON.stringify(allowed)}`,
      );
      const fromPod = await probe(t.client.ns, { host, port }, 5);
      assert.ok(
        fromPod.every((r) => r.ok),
        `${host}:${port} from a pod: ${JSON.stringify(fromPod)}`,
      );
    }
  });

  it('weighted: shares follow the weights (3:1:1) within 8 points over 500 connections', async () => {
    const results = await probe(t.client.ns, { host: '10.96.0.64', port: 80 }, 500);
    const n = tally(results);
    assert.equal(results.filter((r) => r.ok).length, 500);
    const share = (k: string) => (100 * (n[k] ?? 0)) / 500;
    assert.ok(Math.abs(share('pod-a') - 60) <= 8, JSON.stringify(n));
    assert.ok(Math.abs(share('pod-b') - 20) <= 8, JSON.stringify(n));
    assert.ok(Math.abs(share('pod-c') - 20) <= 8, JSON.stringify(n));
  });

  it('maglev: each client always reaches the same backend; clients spread', async () => {
    const results = await probe(
      t.external,
      { host: '198.51.100.40', port: 80 },
      CLIENTS.length * 2,
      2000,
      CLIENTS,
    );
    const byClient = new Map<string, Set<string>>();
    results.forEach((r, i) => {
      const c = CLIENTS[i % CLIENTS.length]!;
      byClient.set(c, (byClient.get(c) ?? new Set()).add(r.server ?? r.error!));
    });
    for (const [c, s] of byClient) assert.equal(s.size, 1, `${c} reached ${[...s].join(', ')}`);
    assert.ok(servers(results).length >= 2, JSON.stringify(tally(results)));
  });

  it('roundRobin: connections go to each backend in turn', async () => {
    const results = await probe(t.client.ns, { host: '10.96.0.66', port: 80 }, 30);
    assert.deepEqual(tally(results), { 'pod-a': 10, 'pod-b': 10, 'pod-c': 10 });
  });

  it('externalTrafficPolicy Local on a node without local endpoints: outside dropped, pods served', async () => {
    const other = compile(clusterFor(t), config('node3')).ruleset;
    await nft.apply(diffRulesets(applied, other).tx);
    try {
      const outside = await probe(t.external, { host: t.nodeIP, port: 30070 }, 3, 700);
      assert.ok(
        outside.every((r) => r.error === 'ETIMEDOUT'),
        JSON.stringify(outside),
      );
      const pods = await probe(t.client.ns, { host: LB, port: 80 }, 30);
      assert.deepEqual(servers(pods), ['pod-a', 'pod-b', 'pod-c']);
      const internal = await probe(t.client.ns, { host: '10.96.0.62', port: 80 }, 3, 700);
      assert.ok(
        internal.every((r) => r.error === 'ETIMEDOUT'),
        'iTP Local without local endpoints drops',
      );
    } finally {
      await nft.apply(diffRulesets(other, applied).tx);
    }
  });

  it('affinity entries pointing at a removed endpoint are deleted, and the client moves on', async () => {
    const store = new ClusterStore('node1');
    const state = clusterFor(t);
    const upsertAll = (s: ClusterState) => {
      for (const o of s.services) store.upsert({ kind: 'Service', object: o });
      for (const o of s.endpointSlices) store.upsert({ kind: 'EndpointSlice', object: o });
      for (const o of s.nodes) store.upsert({ kind: 'Node', object: o });
      for (const o of s.policies ?? []) store.upsert({ kind: 'ProxyPolicy', object: o });
    };
    upsertAll(state);
    const syncer = new Syncer(store, config('node1'), nft, { affinity: new AffinityCleaner(nft) });
    await syncer.sync({ full: true, dirty: new Set(), reasons: new Set(['test']), queuedAt: Date.now() });
    const first = await probe(t.client.ns, { host: '10.96.0.60', port: 80 }, 5);
    const stuck = first[0]!.server!;
    assert.ok(first.every((r) => r.server === stuck));
    const entries = await nft.listSet('ip', TABLE, Maps.affinity);
    assert.ok(entries && entries.elems.size >= 1, 'the kernel recorded the client');
    // The endpoint it is stuck to goes away.
    const gone = t.pods.find((p) => p.name === stuck)!;
    const slices = state.endpointSlices.filter((s) => s.serviceName === 'sticky');
    for (const s of slices) {
      store.upsert({
        kind: 'EndpointSlice',
        object: { ...s, endpoints: s.endpoints.filter((e) => e.address !== gone.ip) },
      });
    }
    const r = await syncer.sync({
      full: false,
      dirty: new Set(['default/sticky']),
      reasons: new Set(['test']),
      queuedAt: Date.now(),
    });
    assert.equal(r.full, false);
    const after = await probe(t.client.ns, { host: '10.96.0.60', port: 80 }, 20);
    assert.ok(
      after.every((x) => x.ok && x.server !== stuck),
      JSON.stringify(tally(after)),
    );
    assert.equal(servers(after).length, 1, 'sticky again, to a live endpoint');
    await nft.apply(diffRulesets(await readBack(nft), applied).tx);
  });
});
