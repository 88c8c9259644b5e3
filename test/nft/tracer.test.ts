/**
 * Tracer semantics on hand-built rulesets, where they differ from "run every statement".
 */
import assert from 'node:assert/strict';
import type { Stmt } from '../../src/nft/ir.js';
import { emptyRuleset, emptyTable, type Ruleset } from '../../src/nft/ruleset.js';
import { Tracer } from '../../src/nft/tracer.js';

function ruleset(base: Stmt[][], chains: Record<string, Stmt[][]> = {}): Ruleset {
  const r = emptyRuleset();
  const t = emptyTable({ family: 'ip', name: 't' });
  t.chains.set('base', {
    chain: {
      family: 'ip',
      table: 't',
      name: 'base',
      type: 'filter',
      hook: 'forward',
      prio: 0,
      policy: 'accept',
    },
    rules: base,
  });
  for (const [name, rules] of Object.entries(chains))
    t.chains.set(name, { chain: { family: 'ip', table: 't', name }, rules });
  r.tables.set('ip t', t);
  return r;
}

const packet = { saddr: '10.0.0.1', daddr: '10.0.0.2', dport: 53, entry: 'pod' as const };

describe('tracer semantics', () => {
  it('goes on with the next rule, not the next statement, when a jumped-to chain returns', () => {
    const r = ruleset([[{ jump: { target: 'sub' } }, { drop: null }]], { sub: [] });
    const out = new Tracer(r, { localAddresses: [] }).trace({ ...packet, protocol: 'tcp' });
    assert.deepEqual(
      out.outcomes.map((o) => o.verdict),
      ['accept'],
    );
  });

  it('does not match `tcp dport` on a UDP packet, and does match `th dport`', () => {
    const dport = (protocol: string): Stmt => ({
      match: { op: '==', left: { payload: { protocol, field: 'dport' } }, right: 53 },
    });
    const r = ruleset([
      [dport('tcp'), { drop: null }],
      [dport('th'), { reject: null }],
    ]);
    const udp = new Tracer(r, { localAddresses: [] }).trace({ ...packet, protocol: 'udp' });
    assert.deepEqual(
      udp.outcomes.map((o) => o.verdict),
      ['reject'],
    );
    const tcp = new Tracer(r, { localAddresses: [] }).trace({ ...packet, protocol: 'tcp' });
    assert.deepEqual(
      tcp.outcomes.map((o) => o.verdict),
      ['drop'],
    );
  });

  it('falls back to the base chain policy', () => {
    const r = ruleset([]);
    r.tables.get('ip t')!.chains.get('base')!.chain.policy = 'drop';
    assert.deepEqual(
      new Tracer(r, { localAddresses: [] })
        .trace({ ...packet, protocol: 'tcp' })
        .outcomes.map((o) => o.verdict),
      ['drop'],
    );
  });
});
