import assert from 'node:assert/strict';
import { SyncQueue, type SyncRequest } from '../../src/controller/queue.js';
import { ManualClock } from '../support/clock.js';

function setup(fail: (n: number) => boolean = () => false) {
  const clock = new ManualClock();
  const runs: SyncRequest[] = [];
  let active = 0;
  let maxActive = 0;
  const q = new SyncQueue(
    async (req) => {
      runs.push(req);
      active++;
      maxActive = Math.max(maxActive, active);
      await new Promise((r) => setImmediate(r));
      active--;
      if (fail(runs.length)) throw new Error('nft said no');
    },
    { minIntervalMs: 100, backoffInitialMs: 1000, backoffMaxMs: 4000, clock },
  );
  return { clock, runs, q, maxActive: () => maxActive };
}

describe('sync queue', () => {
  it('syncs a lone change at once', async () => {
    const { clock, runs, q } = setup();
    q.markDirty(['a/x']);
    await clock.advance(0);
    assert.equal(runs.length, 1);
    assert.deepEqual([...runs[0]!.dirty], ['a/x']);
    assert.equal(runs[0]!.full, false);
  });

  it('coalesces a burst of a thousand changes into a handful of syncs, one at a time', async () => {
    const { clock, runs, q, maxActive } = setup();
    for (let i = 0; i < 1000; i++) {
      q.markDirty([`ns/svc-${i}`]);
      if (i % 100 === 0) await clock.advance(20);
    }
    await clock.advance(1000);
    assert.ok(runs.length <= 5, `${runs.length} syncs`);
    assert.equal(new Set(runs.flatMap((r) => [...r.dirty])).size, 1000, 'every key synced');
    assert.equal(maxActive(), 1, 'single flight');
  });

  it('spaces syncs by the minimum interval', async () => {
    const { clock, runs, q } = setup();
    q.markDirty(['a/x']);
    await clock.advance(0);
    q.markDirty(['a/y']);
    await clock.advance(50);
    assert.equal(runs.length, 1);
    await clock.advance(50);
    assert.equal(runs.length, 2);
  });

  it('retries a failed sync with backoff, as a full sync keeping the dirty keys', async () => {
    const { clock, runs, q } = setup((n) => n <= 2);
    q.markDirty(['a/x']);
    await clock.advance(0);
    assert.equal(runs.length, 1);
    assert.equal(q.consecutiveFailures, 1);
    await clock.advance(999);
    assert.equal(runs.length, 1, 'waits the backoff');
    await clock.advance(1);
    assert.equal(runs.length, 2);
    assert.equal(runs[1]!.full, true);
    assert.ok(runs[1]!.reasons.has('retry'));
    assert.deepEqual([...runs[1]!.dirty], ['a/x']);
    await clock.advance(2000); // the backoff doubled
    assert.equal(runs.length, 3);
    assert.equal(q.consecutiveFailures, 0);
    assert.notEqual(q.lastSuccessAt, undefined);
    await clock.advance(10_000);
    assert.equal(runs.length, 3, 'nothing more to do');
  });

  it('knows since when a change waits, for the health check', async () => {
    const { clock, q } = setup(() => true);
    q.markDirty(['a/x']);
    const queued = clock.now();
    await clock.advance(5000);
    assert.equal(q.pendingSince, queued);
  });
});
