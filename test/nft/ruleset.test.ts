/**
 * irEqual, the structural equality the store (is an object unchanged?) and the diff use.
 */
import assert from 'node:assert/strict';
import { irEqual } from '../../src/nft/ruleset.js';

describe('irEqual', () => {
  it('compares plain values, arrays and objects by structure', () => {
    assert.ok(irEqual({ a: [1, { b: 'x' }] }, { a: [1, { b: 'x' }] }));
    assert.ok(!irEqual({ a: [1, { b: 'x' }] }, { a: [1, { b: 'y' }] }));
    assert.ok(!irEqual([1, 2], [2, 1]), 'order of items counts');
    assert.ok(!irEqual([1], { 0: 1 }), 'a list is not an object');
    assert.ok(!irEqual({ a: 1 }, { a: 1, b: 2 }));
    assert.ok(!irEqual(null, {}));
  });

  it('takes a key set to undefined as absent, as JSON does', () => {
    // The parser builds endpoints with every field present (one object shape); another path
    // may leave unset fields out. Either way it is the same endpoint.
    const shaped = { address: '10.0.0.1', nodeName: undefined, zone: 'a', hints: undefined };
    assert.ok(irEqual(shaped, { address: '10.0.0.1', zone: 'a' }));
    assert.ok(irEqual({ address: '10.0.0.1', zone: 'a' }, shaped));
    assert.ok(!irEqual(shaped, { address: '10.0.0.1', zone: 'a', nodeName: 'n1' }), 'set vs unset');
    assert.ok(!irEqual({ a: undefined, b: 1 }, { c: 1 }), 'different defined keys');
    assert.ok(irEqual([undefined], [undefined]));
    assert.ok(!irEqual([undefined], []), 'a hole in a list still counts');
  });
});
