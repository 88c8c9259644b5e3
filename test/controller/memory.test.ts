import assert from 'node:assert/strict';
import { canCollect, collectSoon } from '../../src/controller/memory.js';

describe('memory after a full sync', () => {
  it('collects garbage once the sync is done, without --expose-gc', async () => {
    assert.equal(canCollect(), true);
    // An object only a WeakRef holds survives until the old generation is collected.
    let big: number[][] | undefined = Array.from({ length: 2000 }, () => new Array<number>(100).fill(1));
    const ref = new WeakRef(big);
    big = undefined;
    // Let it reach the old generation: young collections leave it there.
    await new Promise((r) => setTimeout(r, 20));
    const t = collectSoon(0, 0);
    assert.ok(t, 'a collection is scheduled when the heap is above the threshold');
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(ref.deref(), undefined);
  });

  it('leaves a small heap alone', () => {
    assert.equal(collectSoon(0, Number.MAX_SAFE_INTEGER), undefined);
  });
});
