/**
 * The incremental builder against the full compiler: after any sequence of service updates
 * (with addresses and NodePorts drawn from small pools, so services fight over them), the
 * builder's ruleset equals a fresh compile, and its deltas, as transactions, take a
 * kernel-like fake to exactly that ruleset.
 */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { RulesetBuilder } from '../../src/proxy/builder.js';
import { compile, slicesByService } from '../../src/proxy/compile.js';
import { parseProxyConfig } from '../../src/proxy/config.js';
import { compileService, proxied, serviceKey } from '../../src/proxy/service.js';
import { deltaTransaction, diffRulesets } from '../../src/nft/diff.js';
import { FakeBackend } from '../../src/nft/fake.js';
import { cloneRuleset, compareRulesets, type Ruleset } from '../../src/nft/ruleset.js';
import type { ClusterState, EndpointSlice, Service } from '../../src/k8s/types.js';
import { cluster, service, slice } from '../support/cluster.js';

const CONFIG = parseProxyConfig({ nodeName: 'n1', clusterCIDRs: ['10.244.0.0/16'] });
const NAMES = ['a', 'b', 'c', 'd', 'e'];

interface Spec {
  name: string;
  /** undefined: delete the service. */
  svc?:
    | {
        type: 'ClusterIP' | 'NodePort';
        clusterIP: number;
        externalIP?: number | undefined;
        port: number;
        nodePort: number;
        endpoints: number[];
      }
    | undefined;
}

const arbSpec: fc.Arbitrary<Spec> = fc.record({
  name: fc.constantFrom(...NAMES),
  svc: fc.option(
    fc.record(
      {
        type: fc.constantFrom('ClusterIP' as const, 'NodePort' as const),
        clusterIP: fc.integer({ min: 1, max: 3 }),
        externalIP: fc.integer({ min: 1, max: 2 }),
        port: fc.constantFrom(80, 443),
        nodePort: fc.integer({ min: 30000, max: 30002 }),
        endpoints: fc.uniqueArray(fc.integer({ min: 1, max: 25 }), { maxLength: 20 }),
      },
      { requiredKeys: ['type', 'clusterIP', 'port', 'nodePort', 'endpoints'] },
    ),
    { nil: undefined },
  ),
});

function objects(spec: Spec): { svc: Service; slices: EndpointSlice[] } | undefined {
  const s = spec.svc;
  if (!s) return undefined;
  const svc = service(spec.name, {
    type: s.type,
    clusterIP: `10.96.0.${s.clusterIP}`,
    ...(s.externalIP ? { externalIPs: [`192.168.99.${s.externalIP}`] } : {}),
    ports: [{ port: s.port, ...(s.type === 'NodePort' ? { nodePort: s.nodePort } : {}) }],
  });
  return {
    svc,
    slices: [
      slice(
        spec.name,
        [{ port: 8080 }],
        s.endpoints.map((e) => `10.244.1.${e}`),
        { addressType: 'IPv4' },
      ),
    ],
  };
}

/** Pick chains above the pre-created ones that nothing points at: the builder keeps them until a full sync. */
function withoutUnusedPickChains(r: Ruleset): Ruleset {
  const out = cloneRuleset(r);
  for (const t of out.tables.values()) {
    const used = new Set<string>();
    for (const s of t.sets.values()) {
      for (const e of s.elems.values()) {
        if (Array.isArray(e) && typeof e[1] === 'object' && e[1] !== null && 'goto' in e[1])
          used.add(e[1].goto.target);
      }
    }
    for (const name of [...t.chains.keys()]) {
      const m = /pick-random-(\d+)$/.exec(name);
      if (m && Number(m[1]) > 16 && !used.has(name)) t.chains.delete(name);
    }
  }
  return out;
}

describe('incremental ruleset builder', () => {
  it('equals a fresh compile after any sequence of updates, and its deltas replay exactly', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(arbSpec, { minLength: 1, maxLength: 25 }), async (steps) => {
        const builder = new RulesetBuilder(CONFIG, []);
        const fake = new FakeBackend();
        await fake.apply(diffRulesets(undefined, builder.ruleset()).tx);
        builder.takeDelta();
        const current = new Map<string, { svc: Service; slices: EndpointSlice[] }>();
        for (const step of steps) {
          const o = objects(step);
          if (o) current.set(step.name, o);
          else current.delete(step.name);
          const key = serviceKey('default', step.name);
          builder.setService(key, o && proxied(o.svc) ? compileService(o.svc, o.slices) : undefined);
          await fake.apply(deltaTransaction(builder.takeDelta(), builder, fake).tx);

          const state: ClusterState = cluster(...[...current.values()].flatMap((x) => [x.svc, ...x.slices]));
          const full = compile(state, CONFIG);
          assert.deepEqual(compareRulesets(full.ruleset, withoutUnusedPickChains(builder.ruleset())), []);
          assert.deepEqual(compareRulesets(builder.ruleset(), fake.snapshot()), []);
          assert.deepEqual(builder.diagnostics(), full.diagnostics);
          assert.deepEqual(builder.entries(), full.entries);
        }
      }),
      { numRuns: 150 },
    );
  });

  it('sends nothing when a service is set again unchanged, and one element per changed slot', () => {
    const b = new RulesetBuilder(CONFIG, []);
    const set = (eps: string[]) => {
      const svc = service('s', { clusterIP: '10.96.0.9', ports: [{ port: 80 }] });
      b.setService('default/s', compileService(svc, [slice('s', [{ port: 80 }], eps)]));
      return deltaTransaction(b.takeDelta(), b, new FakeBackend());
    };
    set(['10.244.1.1', '10.244.1.2']);
    assert.deepEqual(set(['10.244.1.1', '10.244.1.2']).tx.commands, []);
    const d = set(['10.244.1.1', '10.244.1.3']);
    // slot 1 changes (delete + add), and the hairpin pair of .2 goes and .3 comes
    assert.equal(d.stats.elementsDeleted, 2);
    assert.equal(d.stats.elementsAdded, 2);
  });

  it('hands a contested address to the next service when its owner goes', () => {
    const b = new RulesetBuilder(CONFIG, []);
    const svc = (name: string, ep: string) => {
      const s = service(name, {
        clusterIP: `10.96.0.${name === 'a' ? 1 : 2}`,
        externalIPs: ['192.168.99.1'],
        ports: [{ port: 80 }],
      });
      return compileService(s, slicesByService([slice(name, [{ port: 80 }], [ep])]).get(`default/${name}`)!);
    };
    b.setService('default/b', svc('b', '10.244.1.2'));
    b.setService('default/a', svc('a', '10.244.1.1'));
    const backend = () =>
      b.ruleset().tables.get('ip nftproxy')!.sets.get('backends')!.elems.get('192.168.99.1 . tcp . #80 . #0');
    assert.deepEqual(backend(), [{ concat: ['192.168.99.1', 'tcp', 80, 0] }, { concat: ['10.244.1.1', 80] }]);
    assert.equal(b.diagnostics().length, 1);
    b.setService('default/a', undefined);
    assert.deepEqual(backend(), [{ concat: ['192.168.99.1', 'tcp', 80, 0] }, { concat: ['10.244.1.2', 80] }]);
    assert.deepEqual(b.diagnostics(), []);
  });
});
