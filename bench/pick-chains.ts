/**
 * What pre-created pick chains cost: full `nft -f` loads of a 10k-service ruleset with only
 * the pick chains in use, with nftproxy's default (1..16 slots created up front), and with
 * 1..64, interleaved, in a throwaway network namespace. Prints a markdown table.
 *
 *   node --import tsx bench/pick-chains.ts [services] [repetitions]
 */
import { performance } from 'node:perf_hooks';
import { execa } from 'execa';
import { compile } from '../src/proxy/compile.js';
import { parseProxyConfig } from '../src/proxy/config.js';
import { diffRulesets } from '../src/nft/diff.js';
import { renderTransaction } from '../src/nft/render.js';
import { cloneRuleset, type Ruleset } from '../src/nft/ruleset.js';
import { Netns } from '../test/support/netns.js';
import { syntheticCluster } from '../test/support/synthetic.js';

const services = Number(process.argv[2] ?? 10_000);
const reps = Number(process.argv[3] ?? 5);
const { ruleset } = compile(
  syntheticCluster(services),
  parseProxyConfig({ nodeName: 'n', clusterCIDRs: ['10.128.0.0/9'] }),
);

/** The ruleset with pick chains for exactly these slot counts (plus those in use). */
function withPickChains(slots: (n: number) => boolean): Ruleset {
  const r = cloneRuleset(ruleset);
  const used = new Set<string>();
  for (const t of r.tables.values()) {
    for (const s of t.sets.values()) {
      if (s.def.map !== 'verdict') continue;
      for (const e of s.elems.values()) {
        const target =
          Array.isArray(e) && typeof e[1] === 'object' && e[1] !== null && 'goto' in e[1]
            ? e[1].goto.target
            : undefined;
        if (target) used.add(target);
      }
    }
    const template = [...t.chains.values()].filter((c) => /^(nodeport-)?pick-random-1$/.test(c.chain.name));
    for (const name of [...t.chains.keys()]) {
      const m = /pick-random-(\d+)$/.exec(name);
      if (m && !used.has(name) && !slots(Number(m[1]))) t.chains.delete(name);
    }
    for (let n = 1; n <= 64; n++) {
      if (!slots(n)) continue;
      for (const c of template) {
        const name = c.chain.name.replace(/-1$/, `-${n}`);
        if (t.chains.has(name)) continue;
        const rules = JSON.parse(JSON.stringify(c.rules).replace(/"mod":1,/g, `"mod":${n},`));
        t.chains.set(name, { chain: { ...c.chain, name }, rules });
      }
    }
  }
  return r;
}

const variants: [string, Ruleset][] = [
  ['only the pick chains in use', withPickChains(() => false)],
  ['1..16 slots created up front (default)', withPickChains((n) => n <= 16)],
  ['1..64 slots created up front', withPickChains((n) => n <= 64)],
];
const scripts = variants.map(([name, r]) => {
  let chains = 0;
  for (const t of r.tables.values()) chains += t.chains.size;
  return { name, chains, script: renderTransaction(diffRulesets(undefined, r).tx), times: [] as number[] };
});

const ns = await Netns.create('bench');
try {
  for (let i = 0; i < reps; i++) {
    for (const s of scripts) {
      const start = performance.now();
      await execa(ns.nftCommand[0]!, [...ns.nftCommand.slice(1), '-f', '-'], { input: s.script });
      s.times.push(performance.now() - start);
    }
  }
} finally {
  await ns.delete();
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
console.log(
  `Full load (nft -f, replacing the tables) of ${services} services, ${reps} interleaved runs each:\n`,
);
console.log('| pick chains | chains in both tables | median | min | max |');
console.log('| --- | --- | --- | --- | --- |');
for (const s of scripts) {
  const f = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
  console.log(
    `| ${s.name} | ${s.chains} | ${f(median(s.times))} | ${f(Math.min(...s.times))} | ${f(Math.max(...s.times))} |`,
  );
}
