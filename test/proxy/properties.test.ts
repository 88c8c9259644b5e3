/**
 * Properties over random clusters (fast-check). The expected endpoints are computed here,
 * independently of src/proxy/endpoints.ts, from the Kubernetes rules.
 */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { compile } from '../../src/proxy/compile.js';
import { parseProxyConfig } from '../../src/proxy/config.js';
import { Tracer } from '../../src/nft/tracer.js';
import { diffRulesets } from '../../src/nft/diff.js';
import { FakeBackend } from '../../src/nft/fake.js';
import {
  compareRulesets,
  renderRulesetScript,
  rulesetFromJson,
  rulesetToJson,
} from '../../src/nft/ruleset.js';
import type { ClusterState } from '../../src/k8s/types.js';
import {
  arbCluster,
  build,
  clusterIP,
  type GenService,
  NODE_IP,
  NODE_IP6,
  podIP,
} from '../support/random-cluster.js';

const POD = '10.244.250.1';
const POD6 = 'fd00:244::fa01';
const CONFIG = parseProxyConfig({ nodeName: 'node1', clusterCIDRs: ['10.244.0.0/16', 'fd00:244::/64'] });
/** The endpoints Kubernetes says a service port should reach, computed from scratch. */
function expected(g: GenService, portIndex: number, v6: boolean): string[] {
  const ready = new Set<string>();
  const fallback = new Set<string>();
  for (const s of g.slices) {
    if (s.v6 !== v6) continue;
    const p = s.ports.find((q) => q.index === portIndex);
    if (!p) continue;
    for (const e of s.endpoints) {
      const ip = podIP(e.pod, v6);
      const text = v6 ? `[${ip}]:${p.target}` : `${ip}:${p.target}`;
      const isReady = e.ready ?? true;
      const isServing = e.serving ?? true; // kube-proxy: unset serving means true
      if (isReady) ready.add(text);
      else if (isServing && (e.terminating ?? false)) fallback.add(text);
    }
  }
  return [...(ready.size ? ready : fallback)].sort();
}

function shuffle<T>(xs: T[], seed: number): T[] {
  const out = [...xs];
  for (let i = out.length - 1; i > 0; i--) {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    const j = seed % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

describe('properties of compiled rulesets', () => {
  it('every address of a service port reaches exactly its usable endpoints, or rejects when there are none', () => {
    fc.assert(
      fc.property(arbCluster, (gen) => {
        const state = build(gen);
        const { ruleset } = compile(state, CONFIG);
        const tracer = new Tracer(ruleset, { localAddresses: [NODE_IP, NODE_IP6, '127.0.0.1', '::1'] });
        let nodePort = 30000;
        gen.forEach((g, i) => {
          g.ports.forEach((p, j) => {
            const protocol = p.protocol.toLowerCase() as 'tcp' | 'udp' | 'sctp';
            const np = g.type !== 'ClusterIP' ? ++nodePort : undefined;
            for (const v6 of g.dual ? [false, true] : [false]) {
              const want = expected(g, j, v6);
              const targets: [string, string, number][] = [[v6 ? POD6 : POD, clusterIP(i, v6), p.port]];
              if (g.external && !v6) targets.push([POD, `192.168.99.${i + 1}`, p.port]);
              if (np) targets.push([v6 ? 'fd00:50::2' : '192.168.50.2', v6 ? NODE_IP6 : NODE_IP, np]);
              for (const [saddr, daddr, dport] of targets) {
                const r = tracer.trace({
                  saddr,
                  daddr,
                  dport,
                  protocol,
                  entry: saddr === POD || saddr === POD6 ? 'pod' : 'external',
                });
                const where = `${daddr}:${dport}/${protocol} of s${i}`;
                assert.deepEqual(r.endpoints, want, where);
                if (want.length === 0)
                  assert.ok(
                    r.outcomes.every((o) => o.verdict === 'reject'),
                    `${where} should reject`,
                  );
                else
                  assert.ok(
                    r.outcomes.every((o) => o.verdict === 'accept'),
                    `${where} should accept`,
                  );
              }
            }
          });
        });
        // Nothing else is captured: an address no service uses passes untouched.
        const stray = tracer.trace({
          saddr: POD,
          daddr: '10.97.0.1',
          dport: 80,
          protocol: 'tcp',
          entry: 'pod',
        });
        assert.ok(stray.outcomes.every((o) => o.verdict === 'accept' && !o.dnat));
      }),
      { numRuns: 150 },
    );
  });

  it('has no duplicate keys, and no address . port both dispatched and rejected', () => {
    fc.assert(
      fc.property(arbCluster, (gen) => {
        const { ruleset } = compile(build(gen), CONFIG);
        for (const obj of rulesetToJson(ruleset).nftables) {
          const s = 'set' in obj ? obj.set : 'map' in obj ? obj.map : undefined;
          if (!s?.elem) continue;
          const keys = s.elem.map((e) => JSON.stringify(Array.isArray(e) ? e[0] : e));
          assert.equal(new Set(keys).size, keys.length, `duplicate key in ${s.name}`);
        }
        for (const t of ruleset.tables.values()) {
          for (const [a, b] of [
            ['service-ips', 'no-endpoint-services'],
            ['service-nodeports', 'no-endpoint-nodeports'],
          ] as const) {
            for (const k of t.sets.get(a)!.elems.keys())
              assert.ok(!t.sets.get(b)!.elems.has(k), `${k} in ${a} and ${b}`);
          }
        }
      }),
    );
  });

  it('renders deterministically, whatever the order of the input objects', () => {
    fc.assert(
      fc.property(arbCluster, fc.integer({ min: 1, max: 1e6 }), (gen, seed) => {
        const state = build(gen);
        const shuffled: ClusterState = {
          services: shuffle(state.services, seed),
          endpointSlices: shuffle(state.endpointSlices, seed + 1),
          nodes: state.nodes,
        };
        assert.equal(
          renderRulesetScript(compile(shuffled, CONFIG).ruleset),
          renderRulesetScript(compile(state, CONFIG).ruleset),
        );
      }),
    );
  });

  it('round-trips through the JSON IR', () => {
    fc.assert(
      fc.property(arbCluster, (gen) => {
        const { ruleset } = compile(build(gen), CONFIG);
        const back = rulesetFromJson(JSON.parse(JSON.stringify(rulesetToJson(ruleset))));
        assert.deepEqual(compareRulesets(ruleset, back), []);
        assert.equal(renderRulesetScript(back), renderRulesetScript(ruleset));
      }),
    );
  });

  it('takes any cluster to any other with one valid transaction', async () => {
    await fc.assert(
      fc.asyncProperty(arbCluster, arbCluster, async (a, b) => {
        const from = compile(build(a), CONFIG).ruleset;
        const to = compile(build(b), CONFIG).ruleset;
        const fake = new FakeBackend();
        await fake.apply(diffRulesets(undefined, from).tx);
        await fake.apply(diffRulesets(from, to).tx);
        assert.deepEqual(compareRulesets(to, fake.snapshot()), []);
      }),
      { numRuns: 100 },
    );
  });
});
