/**
 * @kernel The compiled ruleset in a real kernel, with real traffic between namespaces:
 * a node, a client pod, three backend pods answering with their name and the source they
 * saw, and an external host.
 */
import assert from 'node:assert/strict';
import { execa } from 'execa';
import { compile } from '../../src/proxy/compile.js';
import { parseProxyConfig } from '../../src/proxy/config.js';
import { diffRulesets } from '../../src/nft/diff.js';
import { ExecBackend } from '../../src/nft/exec.js';
import { NftError, NftErrorKind } from '../../src/nft/errors.js';
import {
  compareRulesets,
  emptyRuleset,
  renderRulesetScript,
  type Ruleset,
  tableKey,
} from '../../src/nft/ruleset.js';
import { FAMILIES, Maps, TABLE } from '../../src/proxy/names.js';
import type { ClusterState } from '../../src/k8s/types.js';
import { cluster, node, service, slice } from '../support/cluster.js';
import {
  createTopology,
  requireKernel,
  probe,
  startEchoServer,
  tally,
  type Topology,
} from '../support/netns.js';

const CONFIG_INPUT = { nodeName: 'node1', clusterCIDRs: ['10.244.0.0/16', 'fd00:244::/64'] };
const CONFIG = parseProxyConfig(CONFIG_INPUT);

function clusterFor(t: Topology, webPods = t.pods): ClusterState {
  const [a] = t.pods;
  return cluster(
    node('node1', [t.nodeIP, t.nodeIP6]),
    service('web', {
      type: 'NodePort',
      clusterIPs: ['10.96.0.10', 'fd00:96::10'],
      ports: [{ name: 'http', port: 80, targetPort: 'http', nodePort: 30080 }],
    }),
    slice(
      'web',
      [{ name: 'http', port: 8080 }],
      webPods.map((p) => p.ip),
    ),
    slice(
      'web',
      [{ name: 'http', port: 8080 }],
      webPods.map((p) => p.ip6),
    ),
    service('dns', {
      clusterIP: '10.96.0.53',
      ports: [{ name: 'dns', port: 53, protocol: 'UDP', targetPort: 5353 }],
    }),
    slice(
      'dns',
      [{ name: 'dns', port: 5353, protocol: 'UDP' }],
      t.pods.map((p) => p.ip),
    ),
    service('solo', { clusterIP: '10.96.0.30', ports: [{ port: 80, targetPort: 8080 }] }),
    slice('solo', [{ port: 8080 }], [a!.ip]),
    service('empty', {
      type: 'NodePort',
      clusterIP: '10.96.0.20',
      ports: [
        { name: 'http', port: 80, nodePort: 30090 },
        { name: 'dns', port: 53, protocol: 'UDP', nodePort: 30053 },
      ],
    }),
  );
}

async function readBack(nft: ExecBackend): Promise<Ruleset> {
  const r = emptyRuleset();
  for (const f of FAMILIES) {
    const t = await nft.listTable(f, TABLE);
    if (t) r.tables.set(tableKey(f, TABLE), t);
  }
  return r;
}

describe('@kernel data plane in a network namespace', function () {
  this.timeout(120_000);
  let t: Topology;
  let nft: ExecBackend;
  let applied: Ruleset;
  const stops: (() => Promise<void>)[] = [];

  before(async function () {
    requireKernel(this);
    t = await createTopology(3);
    try {
      for (const p of t.pods) stops.push(await startEchoServer(p, { tcp: [8080], udp: [5353] }));
      nft = new ExecBackend({ command: t.node.nftCommand });
      applied = compile(clusterFor(t), CONFIG).ruleset;
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

  it('finds every nft and kernel feature it needs', async () => {
    const caps = await nft.probe();
    assert.deepEqual(caps.missing, []);
    assert.match(caps.version, /^\d+\.\d+\.\d+$/);
  });

  it('reports missing protocol names (no /etc/protocols) as a missing feature', async () => {
    const caps = await new ExecBackend({
      command: t.node.nftCommand,
      protocolsFile: '/nonexistent/protocols',
    }).probe();
    assert.deepEqual(
      caps.missing.map((m) => m.feature),
      ['protocol names'],
    );
    assert.match(caps.missing[0]!.error, /netbase/);
  });

  it('reads back exactly the ruleset it applied (nft -j list table)', async () => {
    const back = await readBack(nft);
    assert.deepEqual(compareRulesets(applied, back), []);
    // And the diff from what the kernel holds to what we want is empty: a restarted operator
    // adopts its rules instead of replacing them.
    assert.deepEqual(diffRulesets(back, applied).tx.commands, []);
  });

  it('spreads ClusterIP connections over every endpoint, and the pod sees the client', async () => {
    const results = await probe(t.client.ns, { host: '10.96.0.10', port: 80 }, 60);
    assert.deepEqual(Object.keys(tally(results)).sort(), ['pod-a', 'pod-b', 'pod-c']);
    assert.ok(
      results.every((r) => r.seenFrom === t.client.ip),
      'pod-to-service traffic keeps its source',
    );
  });

  it('forwards UDP to every endpoint', async () => {
    const results = await probe(t.client.ns, { host: '10.96.0.53', port: 53, protocol: 'udp' }, 30);
    assert.deepEqual(Object.keys(tally(results)).sort(), ['pod-a', 'pod-b', 'pod-c']);
  });

  it('answers a NodePort from the external host, masqueraded to the node', async () => {
    const results = await probe(t.external, { host: t.nodeIP, port: 30080 }, 30);
    assert.deepEqual(Object.keys(tally(results)).sort(), ['pod-a', 'pod-b', 'pod-c']);
    assert.ok(
      results.every((r) => r.seenFrom === t.gateway),
      `backends should see the node: ${JSON.stringify(tally(results))}`,
    );
  });

  it('masquerades off-cluster traffic to a ClusterIP', async () => {
    const results = await probe(t.external, { host: '10.96.0.10', port: 80 }, 10);
    assert.ok(
      results.every((r) => r.ok && r.seenFrom === t.gateway),
      JSON.stringify(results),
    );
  });

  it('lets a pod reach itself through its service (hairpin)', async () => {
    const [a] = t.pods;
    const results = await probe(a!.ns, { host: '10.96.0.30', port: 80 }, 5);
    assert.ok(
      results.every((r) => r.ok && r.server === 'pod-a' && r.seenFrom === t.gateway),
      JSON.stringify(results),
    );
  });

  it('refuses a service without endpoints at once, every time, on every path', async () => {
    const cases = [
      { from: t.client.ns, host: '10.96.0.20', port: 80 }, // ClusterIP, forward path
      { from: t.node, host: '10.96.0.20', port: 80 }, // ClusterIP, from the node itself
      { from: t.external, host: t.nodeIP, port: 30090 }, // NodePort, input path
      { from: t.client.ns, host: '10.96.0.10', port: 81 }, // unused port of a live ClusterIP
    ];
    for (const c of cases) {
      const results = await probe(c.from, { host: c.host, port: c.port }, 5, 3000);
      assert.ok(
        results.every((r) => r.error === 'ECONNREFUSED'),
        `${c.host}:${c.port}: ${JSON.stringify(results)}`,
      );
    }
    const udp = await probe(t.client.ns, { host: '10.96.0.20', port: 53, protocol: 'udp' }, 1, 3000);
    assert.equal(udp[0]!.error, 'ECONNREFUSED', 'ICMP port unreachable for UDP');
  });

  it('drops an unallocated ClusterIP of --service-cidr instead of routing it to the gateway', async () => {
    // The external host (the node's default gateway) answers on 10.96.0.99: without service
    // CIDRs, a pod's connection there leaves the cluster and is answered.
    const gateway = { name: 'gateway', ns: t.external, ip: '10.96.0.99', ip6: 'fd00:96::99' };
    await t.external.sh('ip addr add 10.96.0.99/32 dev eth0');
    const stop = await startEchoServer(gateway, { tcp: [80] });
    const withCIDRs = compile(
      clusterFor(t),
      parseProxyConfig({ ...CONFIG_INPUT, serviceCIDRs: ['10.96.0.0/16', 'fd00:96::/112'] }),
    ).ruleset;
    try {
      const routed = await probe(t.client.ns, { host: '10.96.0.99', port: 80 }, 3);
      assert.ok(
        routed.every((r) => r.ok && r.server === 'gateway'),
        `without service CIDRs: ${JSON.stringify(routed)}`,
      );
      await nft.apply(diffRulesets(applied, withCIDRs).tx);
      for (const from of [t.client.ns, t.node]) {
        const dropped = await probe(from, { host: '10.96.0.99', port: 80 }, 3, 700);
        assert.ok(
          dropped.every((r) => r.error === 'ETIMEDOUT'),
          `with service CIDRs, from ${from.name}: ${JSON.stringify(dropped)}`,
        );
      }
      const live = await probe(t.client.ns, { host: '10.96.0.10', port: 80 }, 10);
      assert.ok(
        live.every((r) => r.ok),
        'live ClusterIPs still answer',
      );
      const unused = await probe(t.client.ns, { host: '10.96.0.10', port: 81 }, 2, 3000);
      assert.ok(
        unused.every((r) => r.error === 'ECONNREFUSED'),
        'an unused port of a live ClusterIP is still refused',
      );
    } finally {
      await nft.apply(diffRulesets(withCIDRs, applied).tx);
      await stop();
      await t.external.sh('ip addr del 10.96.0.99/32 dev eth0');
    }
  });

  it('forwards an IPv6 ClusterIP and an IPv6 NodePort', async () => {
    const results = await probe(t.client.ns, { host: 'fd00:96::10', port: 80 }, 30);
    assert.deepEqual(Object.keys(tally(results)).sort(), ['pod-a', 'pod-b', 'pod-c']);
    assert.ok(results.every((r) => r.seenFrom === t.client.ip6));
    const np = await probe(t.external, { host: t.nodeIP6, port: 30080 }, 10);
    assert.ok(
      np.every((r) => r.ok && r.seenFrom === t.gateway6),
      JSON.stringify(np),
    );
  });

  it('leaves the old ruleset in place, and traffic flowing, when a transaction fails', async () => {
    const before = await readBack(nft);
    const tx = diffRulesets(applied, compile(clusterFor(t, t.pods.slice(0, 1)), CONFIG).ruleset).tx;
    // The real change, then a command the kernel refuses: nothing of it may land.
    tx.commands.push({
      delete: {
        element: {
          family: 'ip',
          table: TABLE,
          name: Maps.serviceIPs,
          lines: ['10.99.99.99 . tcp . 1 : goto pick-random-1'],
        },
      },
    });
    await assert.rejects(
      nft.apply(tx),
      (e: unknown) => e instanceof NftError && e.kind === NftErrorKind.NotFound,
    );
    assert.deepEqual(compareRulesets(before, await readBack(nft)), []);
    const results = await probe(t.client.ns, { host: '10.96.0.10', port: 80 }, 30);
    assert.deepEqual(Object.keys(tally(results)).sort(), ['pod-a', 'pod-b', 'pod-c']);
  });

  it('applies an incremental change as a diff, and traffic follows', async () => {
    const fewer = compile(clusterFor(t, t.pods.slice(0, 2)), CONFIG).ruleset;
    const d = diffRulesets(applied, fewer);
    assert.equal(d.stats.tablesReplaced, 0);
    await nft.apply(d.tx);
    try {
      assert.deepEqual(compareRulesets(fewer, await readBack(nft)), []);
      const results = await probe(t.client.ns, { host: '10.96.0.10', port: 80 }, 40);
      assert.deepEqual(Object.keys(tally(results)).sort(), ['pod-a', 'pod-b']);
    } finally {
      await nft.apply(diffRulesets(fewer, applied).tx);
    }
    assert.deepEqual(compareRulesets(applied, await readBack(nft)), []);
  });

  it('grows a service past the pre-created pick chains on a live table', async () => {
    // 17 slots needs pick-random-17, which nft 1.0.6 can only create with the table: the
    // diff replaces the table in one transaction, and traffic to other services goes on.
    const state = clusterFor(t);
    state.services.push(service('big', { clusterIP: '10.96.0.40', ports: [{ port: 80, targetPort: 8080 }] }));
    state.endpointSlices.push(
      slice(
        'big',
        [{ port: 8080 }],
        [...t.pods.map((p) => p.ip), ...Array.from({ length: 14 }, (_, i) => `10.244.9.${i + 1}`)],
      ),
    );
    const big = compile(state, CONFIG).ruleset;
    const d = diffRulesets(applied, big);
    assert.equal(d.stats.tablesReplaced, 1);
    await nft.apply(d.tx);
    try {
      assert.deepEqual(compareRulesets(big, await readBack(nft)), []);
      const results = await probe(t.client.ns, { host: '10.96.0.10', port: 80 }, 10);
      assert.ok(results.every((r) => r.ok));
    } finally {
      await nft.apply(diffRulesets(big, applied).tx);
    }
    assert.deepEqual(compareRulesets(applied, await readBack(nft)), []);
  });

  it('loads the script `nftproxy render` prints with nft -f, replacing the tables atomically', async () => {
    const script = renderRulesetScript(applied);
    for (let i = 0; i < 2; i++)
      await execa(t.node.nftCommand[0]!, [...t.node.nftCommand.slice(1), '-f', '-'], { input: script });
    assert.deepEqual(compareRulesets(applied, await readBack(nft)), []);
    const results = await probe(t.client.ns, { host: '10.96.0.10', port: 80 }, 10);
    assert.ok(results.every((r) => r.ok));
  });
});
