/**
 * @kernel detectLocalMode InterfaceNamePrefix with real traffic: pods arrive on the node's
 * `p*` veths and keep their address to a ClusterIP; the external host, arriving on `ext0`,
 * is masqueraded. No cluster CIDR is given, so only the interface tells them apart. Applied
 * once through nft (the text renderer) and once over netlink (the encoder), and read back.
 */
import assert from 'node:assert/strict';
import { compile } from '../../src/proxy/compile.js';
import { parseProxyConfig } from '../../src/proxy/config.js';
import { diffRulesets } from '../../src/nft/diff.js';
import { ExecBackend } from '../../src/nft/exec.js';
import { NetlinkBackend } from '../../src/nft/netlink/backend.js';
import { compareRulesets, emptyRuleset, tableKey } from '../../src/nft/ruleset.js';
import { FAMILIES, TABLE } from '../../src/proxy/names.js';
import { sameDescription } from '../../src/controller/syncer.js';
import { cluster, node, service, slice } from '../support/cluster.js';
import { createTopology, requireKernel, probe, startEchoServer, type Topology } from '../support/netns.js';

describe('@kernel detectLocalMode InterfaceNamePrefix in a network namespace', function () {
  this.timeout(120_000);
  let t: Topology | undefined;
  const stops: (() => Promise<void>)[] = [];

  before(function () {
    requireKernel(this);
  });

  after(async () => {
    for (const s of stops) await s().catch(() => undefined);
    await t?.destroy();
  });

  it('pods (on p* interfaces) keep their address; the outside is masqueraded; both backends', async () => {
    t = await createTopology(2);
    for (const p of t.pods) stops.push(await startEchoServer(p, { tcp: [8080] }));
    const state = cluster(
      node('node1', [t.nodeIP]),
      service('web', { clusterIP: '10.96.0.10', ports: [{ port: 80, targetPort: 8080 }] }),
      slice(
        'web',
        [{ port: 8080 }],
        t.pods.map((p) => p.ip),
      ),
    );
    const config = parseProxyConfig({
      nodeName: 'node1',
      detectLocalMode: 'InterfaceNamePrefix',
      podInterfaceNamePrefix: 'p',
    });
    const desired = compile(state, config).ruleset;
    const exec = new ExecBackend({ command: t.node.nftCommand });
    const netlink = new NetlinkBackend({ netns: t.node.name });
    try {
      for (const [name, backend] of [
        ['nft', exec],
        ['netlink', netlink],
      ] as const) {
        await backend.apply(diffRulesets(undefined, desired).tx);
        const back = emptyRuleset();
        for (const f of FAMILIES) {
          const tb = await exec.listTable(f, TABLE);
          if (tb) back.tables.set(tableKey(f, TABLE), tb);
        }
        assert.deepEqual(compareRulesets(desired, back), [], `${name}: read back as applied`);
        // The drift check (netlink) sees the table as it made it: no endless repairs.
        const builder = compile(state, config).builder;
        for (const tk of builder.tableKeys()) {
          const sk = builder.skeleton(tk);
          const have = await netlink.describeTable(sk.table.family, TABLE);
          assert.ok(have && sameDescription(netlink.describe(sk), have), `${name}: ${tk} described alike`);
        }
        const fromPod = await probe(t.client.ns, { host: '10.96.0.10', port: 80 }, 10);
        assert.ok(
          fromPod.every((r) => r.ok && r.seenFrom === t!.client.ip),
          `${name}, from a pod: ${JSON.stringify(fromPod)}`,
        );
        const fromOutside = await probe(t.external, { host: '10.96.0.10', port: 80 }, 10);
        assert.ok(
          fromOutside.every((r) => r.ok && r.seenFrom === '10.244.1.1'),
          `${name}, from outside: ${JSON.stringify(fromOutside)}`,
        );
        await exec.apply({
          commands: FAMILIES.flatMap((family) => [
            { add: { table: { family, name: TABLE } } },
            { delete: { table: { family, name: TABLE } } },
          ]),
        });
      }
    } finally {
      netlink.close();
    }
  });
});
