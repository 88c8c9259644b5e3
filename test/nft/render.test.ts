import assert from 'node:assert/strict';
import { concat, match, meta, numgenRandom, payload, setRef } from '../../src/nft/ir.js';
import { renderCommand, renderExpr, renderStmt } from '../../src/nft/render.js';
import { NftError } from '../../src/nft/errors.js';

describe('nft text renderer', () => {
  it('renders expressions in nft syntax', () => {
    assert.equal(
      renderExpr(concat(payload('ip', 'daddr'), meta('l4proto'), payload('th', 'dport'), numgenRandom(3))),
      'ip daddr . meta l4proto . th dport . numgen random mod 3',
    );
    assert.equal(renderExpr({ prefix: { addr: 'fd00::', len: 64 } }), 'fd00::/64');
    assert.equal(
      renderExpr({ jhash: { expr: payload('ip', 'saddr'), mod: 4, seed: 10 } }),
      'jhash ip saddr mod 4 seed 0xa',
    );
  });

  it('renders matches with implicit == and in, explicit elsewhere', () => {
    assert.equal(renderStmt(match(payload('ip', 'daddr'), '==', setRef('s'))), 'ip daddr @s');
    assert.equal(renderStmt(match(payload('ip', 'saddr'), '!=', setRef('s'))), 'ip saddr != @s');
    assert.equal(renderStmt(match({ '&': [meta('mark'), 16384] }, '==', 0)), 'meta mark & 16384 == 0');
    assert.equal(
      renderStmt({ reject: { type: 'icmpv6', expr: 'port-unreachable' } }),
      'reject with icmpv6 type port-unreachable',
    );
  });

  it('deletes map elements by key only', () => {
    const cmd = renderCommand({
      delete: {
        element: {
          family: 'ip',
          table: 't',
          name: 'm',
          lines: ['10.0.0.1 . tcp . 80 : goto c'],
        },
      },
    });
    assert.equal(cmd, 'delete element ip t m { 10.0.0.1 . tcp . 80 }');
  });

  it('refuses strings that could smuggle nft syntax', () => {
    for (const bad of ['10.0.0.1; flush ruleset', '1.2.3.4 }', 'a b', '"x"', 'x\ny']) {
      assert.throws(
        () => renderExpr(bad),
        (e: unknown) => e instanceof NftError && e.kind === 'invalid',
        bad,
      );
    }
    assert.throws(
      () => renderCommand({ add: { chain: { family: 'ip', table: 't', name: 'x; flush ruleset' } } }),
      NftError,
    );
    assert.throws(
      () => renderCommand({ add: { table: { family: 'ip', name: 't', comment: 'say "hi"' } } }),
      NftError,
    );
    for (const line of ['10.0.0.1 }; flush ruleset; add element ip t m { 10.0.0.2', '10.0.0.1 # x', '"a"']) {
      assert.throws(
        () => renderCommand({ add: { element: { family: 'ip', table: 't', name: 'm', lines: [line] } } }),
        (e: unknown) => e instanceof NftError && e.kind === 'invalid',
        line,
      );
    }
  });
});
