/**
 * @kernel 10,000 services in one namespace: the flat ruleset renders, the kernel takes it,
 * and it reads back complete. How long it takes belongs to the benchmarks (bench/).
 */
import assert from 'node:assert/strict';
import { compile } from '../../src/proxy/compile.js';
import { parseProxyConfig } from '../../src/proxy/config.js';
import { diffRulesets } from '../../src/nft/diff.js';
import { ExecBackend } from '../../src/nft/exec.js';
import { compareRulesets, emptyRuleset, tableKey } from '../../src/nft/ruleset.js';
import { Maps, TABLE } from '../../src/proxy/names.js';
import { requireKernel, Netns } from '../support/netns.js';
import { syntheticCluster } from '../support/synthetic.js';

describe('@kernel 10,000 services', function () {
  this.timeout(300_000);

  it('render, apply in one transaction, and read back complete', async function () {
    requireKernel(this);
    const { ruleset, stats } = compile(
      syntheticCluster(10_000),
      parseProxyConfig({ nodeName: 'n', clusterCIDRs: ['10.128.0.0/9'] }),
    );
    assert.equal(stats.services, 10_000);
    // 5.5 slots per service on average, plus 6 per NodePort (every tenth service, 6 endpoints).
    assert.equal(stats.endpoints, 55_000 + 1_000 * 6);
    const ns = await Netns.create('scale');
    try {
      const nft = new ExecBackend({ command: ns.nftCommand });
      await nft.apply(diffRulesets(undefined, ruleset).tx);
      const back = emptyRuleset();
      back.tables.set(tableKey('ip', TABLE), (await nft.listTable('ip', TABLE))!);
      back.tables.set(tableKey('ip6', TABLE), (await nft.listTable('ip6', TABLE))!);
      assert.equal(back.tables.get(tableKey('ip', TABLE))!.sets.get(Maps.serviceIPs)!.elems.size, 10_000);
      assert.deepEqual(compareRulesets(ruleset, back), []);
    } finally {
      await ns.delete();
    }
  });
});
