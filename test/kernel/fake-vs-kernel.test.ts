/**
 * @kernel The fake backend is the kernel's double in most tests, so it must refuse what the
 * kernel refuses and hold what the kernel holds. Random sequences of transactions (tables,
 * chains, rules, plain, interval and verdict-map sets, their elements; valid or not) go to a
 * FakeBackend and, through the netlink backend, to a real kernel in a throwaway namespace:
 * after every transaction both must have accepted it or both refused it for the same reason
 * (NftError kind), and both must list the same table (chains, rules, set declarations, every
 * set's elements). FVK_RUNS and FVK_SEED run more or other cases.
 */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { NftError } from '../../src/nft/errors.js';
import { FakeBackend } from '../../src/nft/fake.js';
import type { Command, Transaction } from '../../src/nft/ir.js';
import { NetlinkBackend } from '../../src/nft/netlink/backend.js';
import type { NftBackend } from '../../src/nft/backend.js';
import type { TableDescription } from '../../src/nft/diff.js';
import { Netns, requireKernel } from '../support/netns.js';

const T = { family: 'ip' as const, name: 't' };
const CHAINS = ['a', 'b'] as const;
const SETS = {
  /** `ipv4_addr . inet_service : verdict`. */
  m: { family: 'ip' as const, table: 't', name: 'm', type: ['ipv4_addr', 'inet_service'], map: 'verdict' },
  /** Plain addresses. */
  s: { family: 'ip' as const, table: 't', name: 's', type: 'ipv4_addr' },
  /** Intervals. */
  cidrs: { family: 'ip' as const, table: 't', name: 'cidrs', type: 'ipv4_addr', flags: ['interval'] },
};
type SetName = keyof typeof SETS;

const element = (name: SetName, lines: string[]) => ({
  element: { family: 'ip' as const, table: 't', name, lines },
});

const arbLine: Record<SetName, fc.Arbitrary<string>> = {
  m: fc
    .tuple(
      fc.constantFrom('10.0.0.1', '10.0.0.2', '10.0.0.3'),
      fc.constantFrom(80, 81),
      fc.constantFrom('goto a', 'goto b', 'jump a', 'goto missing'),
    )
    .map(([ip, port, v]) => `${ip} . ${port} : ${v}`),
  s: fc.constantFrom('10.0.0.1', '10.0.0.2', '10.1.0.1'),
  cidrs: fc.constantFrom('10.0.0.0/8', '10.0.0.5', '11.0.0.0/16', '11.0.1.1', '192.168.0.0/24'),
};

const arbSetName = fc.constantFrom(...(Object.keys(SETS) as SetName[]));
const arbChain = fc.constantFrom(...CHAINS);

/** Rules nftproxy writes, in miniature: a lookup in a set, a verdict map, a jump. */
const arbRule = fc.constantFrom<unknown[]>(
  [
    { match: { op: '==', left: { payload: { protocol: 'ip', field: 'daddr' } }, right: '@s' } },
    { accept: null },
  ],
  [
    {
      vmap: {
        key: {
          concat: [
            { payload: { protocol: 'ip', field: 'daddr' } },
            { payload: { protocol: 'th', field: 'dport' } },
          ],
        },
        data: '@m',
      },
    },
  ],
  [{ jump: { target: 'b' } }],
  [
    { match: { op: '==', left: { payload: { protocol: 'ip', field: 'saddr' } }, right: '@cidrs' } },
    { drop: null },
  ],
);

const arbCommand: fc.Arbitrary<Command> = fc.oneof(
  { arbitrary: fc.constant<Command>({ add: { table: T } }), weight: 1 },
  { arbitrary: fc.constant<Command>({ delete: { table: T } }), weight: 1 },
  {
    arbitrary: arbChain.map((name): Command => ({ add: { chain: { family: 'ip', table: 't', name } } })),
    weight: 2,
  },
  {
    arbitrary: arbChain.map((name): Command => ({ delete: { chain: { family: 'ip', table: 't', name } } })),
    weight: 2,
  },
  {
    arbitrary: arbChain.map((name): Command => ({ flush: { chain: { family: 'ip', table: 't', name } } })),
    weight: 2,
  },
  {
    arbitrary: arbSetName.map((n): Command =>
      n === 'm' ? { add: { map: SETS.m } } : { add: { set: SETS[n] } },
    ),
    weight: 2,
  },
  {
    arbitrary: arbSetName.map((n): Command =>
      n === 'm' ? { delete: { map: SETS.m } } : { delete: { set: SETS[n] } },
    ),
    weight: 2,
  },
  {
    arbitrary: arbSetName.chain((n) =>
      fc
        .tuple(fc.boolean(), fc.uniqueArray(arbLine[n], { minLength: 1, maxLength: 3 }))
        .map(([add, lines]): Command => (add ? { add: element(n, lines) } : { delete: element(n, lines) })),
    ),
    weight: 8,
  },
  {
    arbitrary: fc
      .tuple(arbChain, arbRule)
      .map(([chain, expr]) => ({ add: { rule: { family: 'ip', table: 't', chain, expr } } }) as Command),
    weight: 3,
  },
);

/** The table with its chains and sets, as a run starts (most runs: the commands then act on something). */
const SETUP: Transaction = {
  commands: [
    { add: { table: T } },
    ...CHAINS.map((name): Command => ({ add: { chain: { family: 'ip', table: 't', name } } })),
    { add: { map: SETS.m } },
    { add: { set: SETS.s } },
    { add: { set: SETS.cidrs } },
  ],
};

const arbTransaction: fc.Arbitrary<Transaction> = fc
  .array(arbCommand, { minLength: 1, maxLength: 4 })
  .map((commands) => ({ commands }));

/** A description as compared: chains with their rules, set declarations (counts left out). */
function comparable(d: TableDescription | undefined): unknown {
  if (!d) return undefined;
  return {
    chains: Object.fromEntries([...d.chains].map(([name, c]) => [name, { def: c.def, rules: c.rules }])),
    sets: Object.fromEntries([...d.sets].map(([name, st]) => [name, st.def])),
  };
}

/**
 * Table t as the kernel lists it and as the fake holds it, both in the kernel backend's terms
 * (its description of the fake's table: what a sync compares), with every set's elements.
 */
async function listings(fake: FakeBackend, kernel: NetlinkBackend): Promise<[unknown, unknown]> {
  const held = await fake.listTable('ip', 't');
  const listed = await kernel.describeTable('ip', 't');
  const elements = async (b: NftBackend, d: TableDescription | undefined) => {
    const out: Record<string, string[]> = {};
    for (const name of d?.sets.keys() ?? [])
      out[name] = ((await b.listElements('ip', 't', name)) ?? []).sort();
    return out;
  };
  const heldD = held && kernel.describe(held);
  return [
    { table: comparable(heldD), elements: await elements(fake, heldD) },
    { table: comparable(listed), elements: await elements(kernel, listed) },
  ];
}

/** How a transaction went: `ok`, or refused and why (the NftError kind; the texts differ). */
async function outcome(b: NftBackend, tx: Transaction): Promise<string> {
  try {
    await b.apply(tx);
    return 'ok';
  } catch (e) {
    if (!(e instanceof NftError)) throw e;
    return `refused (${e.kind})`;
  }
}

describe('@kernel the fake backend against the kernel', function () {
  this.timeout(300_000);
  let ns: Netns | undefined;
  let kernel: NetlinkBackend | undefined;

  before(async function () {
    requireKernel(this);
    ns = await Netns.create('fvk');
    kernel = new NetlinkBackend({ netns: ns.name });
  });

  after(async () => {
    kernel?.close();
    await ns?.delete();
  });

  it('accepts and refuses the same random transactions, and lists the same table after each', async () => {
    let applied = 0;
    let refused = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.boolean(),
        fc.array(arbTransaction, { minLength: 1, maxLength: 8 }),
        async (setup, more) => {
          const txs = setup ? [SETUP, ...more] : more;
          await ns!.run('nft', 'flush', 'ruleset');
          // A fresh backend each run: what it learnt of the last run's sets is void.
          kernel!.close();
          kernel = new NetlinkBackend({ netns: ns!.name });
          const fake = new FakeBackend();
          for (const [i, tx] of txs.entries()) {
            const want = await outcome(kernel, tx);
            const got = await outcome(fake, tx);
            if (want === 'ok') applied++;
            else refused++;
            assert.equal(
              got,
              want,
              `transaction ${i} (${JSON.stringify(tx.commands)}): the kernel said ${want}`,
            );
            const [held, listed] = await listings(fake, kernel);
            assert.deepEqual(held, listed, `after transaction ${i} (${JSON.stringify(tx.commands)})`);
          }
        },
      ),
      { numRuns: Number(process.env.FVK_RUNS ?? 150), seed: Number(process.env.FVK_SEED ?? 20261203) },
    );
    // Both outcomes come up often, so the comparison covers refusals as well as changes.
    assert.ok(applied > 100 && refused > 100, `${applied} applied, ${refused} refused`);
    if (process.env.FVK_RUNS) console.log(`      ${applied} transactions applied, ${refused} refused`);
  });
});
