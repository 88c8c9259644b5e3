/**
 * The diff: applied to the old state, a transaction yields exactly the new one, in an order
 * the (kernel-like) fake accepts, and touches only what changed.
 */
import assert from 'node:assert/strict';
import { diffRulesets } from '../../src/nft/diff.js';
import { FakeBackend } from '../../src/nft/fake.js';
import { compareRulesets, cloneRuleset, type Ruleset } from '../../src/nft/ruleset.js';
import { compile } from '../../src/proxy/compile.js';
import { parseProxyConfig, type ProxyConfigInput } from '../../src/proxy/config.js';
import type { ClusterState } from '../../src/k8s/types.js';
import { cluster, service, slice } from '../support/cluster.js';

const CONFIG: ProxyConfigInput = { nodeName: 'n1', clusterCIDRs: ['10.244.0.0/16'] };
const build = (state: ClusterState, config: ProxyConfigInput = CONFIG): Ruleset =>
  compile(state, parseProxyConfig(config)).ruleset;

const svc = (name: string, ip: string, endpoints: string[]) => [
  service(name, { clusterIP: ip, ports: [{ port: 80 }] }),
  slice(name, [{ port: 80 }], endpoints),
];

/** Applies full(from) then diff(from, to) to a fake; asserts the result is `to`. */
async function check(from: Ruleset, to: Ruleset) {
  const fake = new FakeBackend();
  await fake.apply(diffRulesets(undefined, from).tx);
  const d = diffRulesets(from, to);
  await fake.apply(d.tx);
  assert.deepEqual(compareRulesets(to, fake.snapshot()), []);
  return d;
}

const kinds = (d: ReturnType<typeof diffRulesets>) =>
  d.tx.commands.map((c) => `${Object.keys(c)[0]} ${Object.keys(Object.values(c)[0] as object)[0]}`);

describe('ruleset diff', () => {
  const a = () => build(cluster(...svc('a', '10.96.0.1', ['10.244.1.1', '10.244.1.2'])));

  it('is empty when nothing changed', async () => {
    const d = await check(a(), a());
    assert.deepEqual(d.tx.commands, []);
  });

  it('replaces every table whole on a first sync, atomically', () => {
    const d = diffRulesets(undefined, a());
    assert.deepEqual(kinds(d).slice(0, 3), ['add table', 'delete table', 'add table']);
    assert.equal(d.stats.tablesReplaced, 2);
  });

  it('adds a service with a known endpoint count as elements only', async () => {
    const d = await check(
      a(),
      build(
        cluster(
          ...svc('a', '10.96.0.1', ['10.244.1.1', '10.244.1.2']),
          ...svc('b', '10.96.0.2', ['10.244.2.1', '10.244.2.2']),
        ),
      ),
    );
    assert.ok(
      kinds(d).every((k) => k === 'add element'),
      kinds(d).join(', '),
    );
    // service-ips entry, 2 backends, cluster-ips entry, 2 hairpin pairs
    assert.equal(d.stats.elementsAdded, 6);
    assert.equal(d.stats.elementsDeleted, 0);
  });

  it('changes an endpoint count up to 16 with elements only: those pick chains always exist', async () => {
    const d = await check(
      a(),
      build(cluster(...svc('a', '10.96.0.1', ['10.244.1.1', '10.244.1.2', '10.244.1.3']))),
    );
    assert.equal(d.stats.chainsAdded + d.stats.chainsDeleted + d.stats.tablesReplaced, 0);
    assert.ok(
      kinds(d).every((k) => k.endsWith('element')),
      kinds(d).join(', '),
    );
  });

  it('replaces the table, in the same transaction, when a new pick chain must use the existing typeof map', async () => {
    const many = Array.from({ length: 17 }, (_, i) => `10.244.3.${i + 1}`);
    const big = build(
      cluster(...svc('a', '10.96.0.1', ['10.244.1.1', '10.244.1.2']), ...svc('b', '10.96.0.2', many)),
    );
    const d = await check(a(), big);
    assert.equal(d.stats.tablesReplaced, 1, 'the ip table; ip6 has nothing new');
    assert.match(
      d.stats.replaceReasons[0]!,
      /ip nftproxy: new rule in pick-random-17 refers to typeof map backends/,
    );
    // Going back only deletes: that is incremental.
    const back = await check(big, a());
    assert.equal(back.stats.tablesReplaced, 0);
    assert.equal(back.stats.chainsDeleted, 1);
  });

  it('moves an entry to another chain by delete and add of the element', async () => {
    const d = await check(a(), build(cluster(...svc('a', '10.96.0.1', ['10.244.1.1']))));
    assert.ok(d.stats.elementsDeleted >= 1 && d.stats.elementsAdded >= 1);
  });

  it('removes a service as element deletes', async () => {
    const both = build(
      cluster(
        ...svc('a', '10.96.0.1', ['10.244.1.1', '10.244.1.2']),
        ...svc('b', '10.96.0.2', ['10.244.2.1', '10.244.2.2']),
      ),
    );
    const d = await check(both, a());
    assert.ok(
      kinds(d).every((k) => k === 'delete element'),
      kinds(d).join(', '),
    );
  });

  it('refills a static chain whose rules changed, without replacing the table', async () => {
    const d = await check(
      a(),
      build(cluster(...svc('a', '10.96.0.1', ['10.244.1.1', '10.244.1.2'])), {
        ...CONFIG,
        masqueradeAll: true,
      }),
    );
    assert.equal(d.stats.tablesReplaced, 0);
    assert.equal(d.stats.chainsFlushed, 2, 'the services chain of each family');
    assert.ok(kinds(d).includes('flush chain'));
  });

  it('replaces the table when a base chain changes', async () => {
    const to = cloneRuleset(a());
    const chain = to.tables.get('ip nftproxy')!.chains.get('nat-prerouting')!;
    chain.chain = { ...chain.chain, prio: -99 };
    const d = await check(a(), to);
    assert.equal(d.stats.tablesReplaced, 1);
  });

  it('deletes tables that are no longer wanted', async () => {
    const to = cloneRuleset(a());
    to.tables.delete('ip6 nftproxy');
    const d = await check(a(), to);
    assert.equal(d.stats.tablesDeleted, 1);
  });
});
