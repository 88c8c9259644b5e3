/**
 * The syncer and queue together on the kernel-like fake: partial and full syncs, failure
 * injection, adoption of identical rules, drift repair, bursts.
 */
import assert from 'node:assert/strict';
import { SyncQueue } from '../../src/controller/queue.js';
import { Syncer } from '../../src/controller/syncer.js';
import { ClusterStore } from '../../src/k8s/store.js';
import { compile } from '../../src/proxy/compile.js';
import { parseProxyConfig } from '../../src/proxy/config.js';
import { diffRulesets } from '../../src/nft/diff.js';
import { NftError, NftErrorKind } from '../../src/nft/errors.js';
import { FakeBackend } from '../../src/nft/fake.js';
import { compareRulesets } from '../../src/nft/ruleset.js';
import { service, slice } from '../support/cluster.js';
import { ManualClock } from '../support/clock.js';

const CONFIG = parseProxyConfig({ nodeName: 'n1', clusterCIDRs: ['10.244.0.0/16'] });

function world(fake = new FakeBackend()) {
  const store = new ClusterStore('n1');
  const syncer = new Syncer(store, CONFIG, fake);
  const clock = new ManualClock();
  const queue = new SyncQueue((req) => syncer.sync(req).then(() => undefined), {
    minIntervalMs: 100,
    backoffInitialMs: 1000,
    clock,
  });
  const put = (name: string, ip: string, eps: string[]) => {
    const keys = [
      ...store.upsert({ kind: 'Service', object: service(name, { clusterIP: ip, ports: [{ port: 80 }] }) })
        .services,
      ...store.upsert({ kind: 'EndpointSlice', object: slice(name, [{ port: 80 }], eps) }).services,
    ];
    queue.markDirty(keys);
  };
  const matchesStore = () =>
    assert.deepEqual(compareRulesets(compile(store.state(), CONFIG).ruleset, fake.snapshot()), []);
  return { store, fake, syncer, clock, queue, put, matchesStore };
}

describe('syncer', () => {
  it('programs a full sync first, then applies changes as element updates', async () => {
    const w = world();
    w.put('a', '10.96.0.1', ['10.244.1.1']);
    w.queue.requestFull('start');
    await w.clock.advance(0);
    w.matchesStore();
    w.put('a', '10.96.0.1', ['10.244.1.1', '10.244.1.2']);
    await w.clock.advance(100);
    w.matchesStore();
    const last = w.fake.applied.at(-1)!;
    assert.ok(
      last.commands.every((c) => 'element' in (Object.values(c)[0] as object)),
      'element updates only',
    );
  });

  it('survives a failed transaction: the kernel keeps the old rules, the retry is full and converges', async () => {
    const w = world();
    w.put('a', '10.96.0.1', ['10.244.1.1']);
    w.queue.requestFull('start');
    await w.clock.advance(0);
    const before = w.fake.snapshot();
    w.fake.injectFailure = (_tx, n) => (n === 2 ? new NftError(NftErrorKind.Failed, 'injected') : undefined);
    w.put('a', '10.96.0.1', ['10.244.1.7']);
    w.put('b', '10.96.0.2', ['10.244.2.1']);
    await w.clock.advance(100);
    assert.equal(w.fake.applied.length, 2);
    assert.deepEqual(
      compareRulesets(before, w.fake.snapshot()),
      [],
      'nothing of the failed transaction landed',
    );
    assert.equal(w.syncer.current, undefined, 'the syncer forgot what it thought was applied');
    await w.clock.advance(1000);
    assert.equal(w.fake.applied.length, 3);
    w.matchesStore();
    assert.equal(w.queue.consecutiveFailures, 0);
  });

  it('adopts identical rules already in the kernel without sending anything', async () => {
    const w = world();
    w.put('a', '10.96.0.1', ['10.244.1.1']);
    await w.fake.apply(diffRulesets(undefined, compile(w.store.state(), CONFIG).ruleset).tx);
    const sent = w.fake.applied.length;
    const r = await w.syncer.sync({ full: true, dirty: new Set(), reasons: new Set(['start']), queuedAt: 0 });
    assert.equal(r.commands, 0);
    assert.equal(w.fake.applied.length, sent);
  });

  it('reports a sync as full when it had to be, whatever was asked', async () => {
    const w = world();
    w.put('a', '10.96.0.1', ['10.244.1.1']);
    const r = await w.syncer.sync({
      full: false,
      dirty: new Set(['default/a']),
      reasons: new Set(['change']),
      queuedAt: 0,
    });
    assert.equal(r.full, true, 'no builder yet: the first sync is full');
    w.matchesStore();
  });

  it('replaces stale rules of an earlier run in one transaction', async () => {
    const w = world();
    w.put('old', '10.96.0.9', ['10.244.9.9']);
    await w.fake.apply(diffRulesets(undefined, compile(w.store.state(), CONFIG).ruleset).tx);
    w.store.remove('Service', 'default', 'old');
    w.put('a', '10.96.0.1', ['10.244.1.1']);
    await w.syncer.sync({ full: true, dirty: new Set(), reasons: new Set(['start']), queuedAt: 0 });
    w.matchesStore();
  });

  it('notices a deleted or flushed table and repairs it with a full sync', async () => {
    const w = world();
    w.put('a', '10.96.0.1', ['10.244.1.1']);
    w.queue.requestFull('start');
    await w.clock.advance(0);
    assert.equal(await w.syncer.drifted(), false);
    w.fake.dropTable('ip', 'nftproxy');
    assert.equal(await w.syncer.drifted(), true);
    w.queue.requestFull('drift');
    await w.clock.advance(100);
    assert.equal(await w.syncer.drifted(), false);
    w.matchesStore();
  });

  it('puts back what others changed, key by key, from their account of it, without reading the sets', async () => {
    const w = world();
    w.put('a', '10.96.0.1', ['10.244.1.1', '10.244.1.2']);
    w.put('b', '10.96.0.2', ['10.244.2.1']);
    w.queue.requestFull('start');
    await w.clock.advance(0);
    const el = (name: string, lines: string[]) => ({
      element: { family: 'ip' as const, table: 'nftproxy', name, lines },
    });
    // Someone deletes a backend and a ClusterIP, adds a stray VIP and re-points another.
    const gone = '10.96.0.1 . tcp . 80 . 1 : 10.244.1.2 . 80';
    const stray = '10.96.0.9 . tcp . 80 : goto reject-chain';
    await w.fake.apply({
      commands: [
        { delete: el('backends', [gone]) },
        { delete: el('cluster-ips', ['10.96.0.2']) },
        { add: el('service-ips', [stray]) },
      ],
    });
    let reads = 0;
    const list = w.fake.listElements.bind(w.fake);
    w.fake.listElements = (f, t, set) => (reads++, list(f, t, set));
    w.queue.requestRepair(
      new Map([
        [
          'ip',
          {
            skeleton: false,
            elements: new Map([
              ['backends', [{ op: '-' as const, line: gone }]],
              ['cluster-ips', [{ op: '-' as const, line: '10.96.0.2' }]],
              ['service-ips', [{ op: '+' as const, line: stray }]],
            ]),
          },
        ],
      ]),
    );
    await w.clock.advance(100);
    w.matchesStore();
    assert.equal(reads, 0, 'no set was read');
    const tx = w.fake.applied.at(-1)!;
    assert.equal(tx.commands.length, 3, JSON.stringify(tx.commands));
  });

  it('compares a set whole when others changed it in a way not given as lines', async () => {
    const w = world();
    w.put('a', '10.96.0.1', ['10.244.1.1']);
    w.queue.requestFull('start');
    await w.clock.advance(0);
    await w.fake.apply({
      commands: [
        {
          delete: { element: { family: 'ip', table: 'nftproxy', name: 'cluster-ips', lines: ['10.96.0.1'] } },
        },
      ],
    });
    w.queue.requestRepair(
      new Map([['ip', { skeleton: false, elements: new Map([['cluster-ips', 'unknown' as const]]) }]]),
    );
    await w.clock.advance(100);
    w.matchesStore();
  });

  it('rewrites a set larger than the backend reads cheaply instead of reading it, and converges', async () => {
    const w = world(new FakeBackend(true, 4));
    for (let i = 0; i < 6; i++) w.put(`s${i}`, `10.96.0.${i + 1}`, [`10.244.1.${i + 1}`]);
    await w.fake.apply(diffRulesets(undefined, compile(w.store.state(), CONFIG).ruleset).tx);
    w.put('s0', '10.96.0.1', ['10.244.1.99']);
    let reads = 0;
    const list = w.fake.listElements.bind(w.fake);
    w.fake.listElements = (f, t, set) => (reads++, list(f, t, set));
    const r = await w.syncer.sync({ full: true, dirty: new Set(), reasons: new Set(['start']), queuedAt: 0 });
    w.matchesStore();
    // service-ips, backends, cluster-ips and hairpin hold 6 elements each: rewritten, not read.
    assert.equal(r.diff.setsRewritten, 4);
    const flushed = w.fake.applied
      .at(-1)!
      .commands.filter((c) => 'flush' in c)
      .map((c) => Object.values((c as { flush: object }).flush)[0] as { name: string })
      .map((x) => x.name);
    assert.deepEqual(flushed.sort(), ['backends', 'cluster-ips', 'hairpin', 'service-ips']);
    assert.ok(reads > 0, 'small sets are still read');
    const again = await w.syncer.sync({
      full: true,
      dirty: new Set(),
      reasons: new Set(['periodic']),
      queuedAt: 0,
    });
    assert.equal(again.diff.setsRewritten, 4, 'large sets are rewritten at every full sync');
    w.matchesStore();
  });

  it('turns a thousand changes in a burst into a handful of transactions', async () => {
    const w = world();
    w.queue.requestFull('start');
    await w.clock.advance(0);
    const before = w.fake.applied.length;
    for (let i = 0; i < 1000; i++) {
      w.put(`s${i}`, `10.96.${i >> 8}.${i & 255}`, [`10.244.${i >> 8}.${i & 255}`]);
      if (i % 250 === 0) await w.clock.advance(10);
    }
    await w.clock.advance(2000);
    const txs = w.fake.applied.length - before;
    assert.ok(txs >= 1 && txs <= 6, `${txs} transactions`);
    w.matchesStore();
  });
});
