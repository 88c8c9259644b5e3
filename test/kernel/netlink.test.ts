/**
 * @kernel The netlink backend against nft 1.0.6 and the kernel: the encoder writes what nft
 * writes (byte for byte, from `nft --debug=mnl`), both backends leave the kernel listing the
 * same ruleset, each adopts what the other wrote, a batch the kernel refuses halfway leaves
 * everything as it was, and the kernel's refusals come back as the right NftError kinds.
 */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { loadManifestDir } from '../../src/k8s/manifests.js';
import type { ClusterState } from '../../src/k8s/types.js';
import type { ForeignChange, NftBackend } from '../../src/nft/backend.js';
import { createTable, emptyStats, TablePlan } from '../../src/nft/diff.js';
import { NftError, NftErrorKind } from '../../src/nft/errors.js';
import { ExecBackend } from '../../src/nft/exec.js';
import type { Command, Transaction } from '../../src/nft/ir.js';
import { BatchEncoder } from '../../src/nft/netlink/batch.js';
import { messageAttrs, parseMessages } from '../../src/nft/netlink/attr.js';
import { NetlinkBackend } from '../../src/nft/netlink/backend.js';
import { specOfDef } from '../../src/nft/netlink/datatypes.js';
import { ruleKey } from '../../src/nft/netlink/decode.js';
import { TableMonitor } from '../../src/nft/netlink/monitor.js';
import { renderTransaction } from '../../src/nft/render.js';
import type { RulesetBuilder } from '../../src/proxy/builder.js';
import { compile } from '../../src/proxy/compile.js';
import { parseProxyConfig, type ProxyConfigInput } from '../../src/proxy/config.js';
import { Maps, Sets, TABLE } from '../../src/proxy/names.js';
import { compareBatches, nftBatch } from '../support/mnl-debug.js';
import { requireKernel, Netns } from '../support/netns.js';
import { arbCluster, build } from '../support/random-cluster.js';

const here = (p: string) => new URL(p, import.meta.url).pathname;

const GOLDEN: { name: string; dir: string; config: ProxyConfigInput }[] = [
  {
    name: 'basic',
    dir: 'basic',
    config: { nodeName: 'node1', clusterCIDRs: ['10.244.0.0/16', 'fd00:244::/48'] },
  },
  {
    name: 'basic-nodeport-addresses',
    dir: 'basic',
    config: {
      nodeName: 'node1',
      clusterCIDRs: ['10.244.0.0/16'],
      nodePortAddresses: ['192.168.50.0/24', 'primary'],
      masqueradeAll: true,
    },
  },
  { name: 'mixed', dir: 'mixed', config: { nodeName: 'node1', clusterCIDRs: ['10.244.0.0/16'] } },
];

async function golden(dir: string): Promise<ClusterState> {
  return (await loadManifestDir(here(`../fixtures/clusters/${dir}`))).state;
}

/** The transaction that creates the builder's tables from nothing. */
function creation(b: RulesetBuilder): Transaction {
  const stats = emptyStats();
  return { commands: b.tableKeys().flatMap((tk) => createTable(b.desired(tk), stats, false)) };
}

/** Our batch's messages (without BATCH_BEGIN/END), as the comparison takes them. */
function ours(tx: Transaction, known: Parameters<typeof BatchEncoder.encode>[1] = { spec: () => undefined }) {
  return parseMessages(BatchEncoder.encode(tx, known, 1).buf)
    .slice(1, -1)
    .map((m) => ({ type: m.type, family: m.family, attrs: Buffer.from(messageAttrs(m)) }));
}

const INTERVAL_SETS = new Set(['cluster-cidrs', 'nodeport-addresses']);

/** `nft -j list ruleset` without handles (they number objects in creation order). */
async function listing(ns: Netns): Promise<unknown> {
  const out = (await ns.run('nft', '-j', 'list', 'ruleset')).stdout;
  return JSON.parse(out.replace(/"handle": \d+, ?/g, '').replace(/, "handle": \d+/g, ''));
}

/** What a full sync through `backend` would send to make the kernel equal to `b`. */
async function planned(backend: NftBackend, b: RulesetBuilder): Promise<Command[]> {
  const out: Command[] = [];
  for (const tk of b.tableKeys()) {
    const d = b.desired(tk);
    const kernel = await backend.describeTable(d.skeleton.table.family, TABLE);
    if (!kernel) throw new Error(`${tk} missing`);
    const plan = new TablePlan(d, kernel, backend, emptyStats());
    assert.equal(plan.replaceReason, undefined, `${backend.name}: ${tk} would be replaced`);
    for (const set of plan.setsToCompare) {
      plan.compareSet(set, new Set(await backend.listElements(d.skeleton.table.family, TABLE, set)));
    }
    out.push(...plan.commands());
  }
  return out;
}

describe('@kernel netlink backend', function () {
  this.timeout(120_000);
  let a: Netns | undefined;
  let b: Netns | undefined;
  const backends: NftBackend[] = [];

  before(async function () {
    requireKernel(this);
    a = await Netns.create('nla');
    b = await Netns.create('nlb');
  });

  after(async () => {
    for (const x of backends) x.close?.();
    await a?.delete();
    await b?.delete();
  });

  const netlink = (ns: Netns) => {
    const x = new NetlinkBackend({ netns: ns.name });
    backends.push(x);
    return x;
  };
  const exec = (ns: Netns) => new ExecBackend({ command: ns.nftCommand });
  const reset = async () => {
    await a!.run('nft', 'flush', 'ruleset');
    await b!.run('nft', 'flush', 'ruleset');
  };

  for (const g of GOLDEN) {
    it(`${g.name}: every message of the table's creation is the bytes nft sends`, async () => {
      await reset();
      const r = compile(await golden(g.dir), parseProxyConfig(g.config));
      const tx = creation(r.builder);
      const theirs = await nftBatch(a!.name, renderTransaction(tx));
      assert.deepEqual(compareBatches(theirs, ours(tx), INTERVAL_SETS), []);
      assert.ok(theirs.length > 300, `${theirs.length} messages compared`);
    });
  }

  it('changes to a live table: elements, flushed and refilled chains, a new chain, a refilled interval set, deletes', async () => {
    await reset();
    const r = compile(await golden('basic'), parseProxyConfig(GOLDEN[0]!.config));
    await exec(a!).apply(creation(r.builder));
    const t = r.builder.skeleton('ip nftproxy');
    const el = (op: 'add' | 'delete', name: string, lines: string[]): Command => {
      const obj = { element: { family: 'ip' as const, table: TABLE, name, lines } };
      return op === 'add' ? { add: obj } : { delete: obj };
    };
    const services = t.chains.get('services')!;
    const record = { family: 'ip' as const, table: TABLE, name: 'affinity-60' };
    const tx: Transaction = {
      commands: [
        el('delete', Maps.backends, ['10.96.0.10 . tcp . 80 . 0 : 10.244.1.10 . 8080']),
        el('add', Maps.backends, ['10.96.0.10 . tcp . 80 . 0 : 10.244.9.9 . 8080']),
        el('add', Maps.serviceIPs, ['10.96.0.99 . udp . 53 : goto pick-random-2']),
        el('delete', 'hairpin', ['10.244.1.10 . 10.244.1.10']),
        { flush: { chain: services.chain } },
        ...services.rules.map((expr): Command => ({
          add: { rule: { ...services.chain, chain: 'services', expr } },
        })),
        { add: { chain: record } },
        {
          add: {
            rule: {
              ...record,
              chain: 'affinity-60',
              expr: [{ affinityUpdate: { family: 'ip', map: Maps.affinity, protocol: 'tcp', timeout: 60 } }],
            },
          },
        },
        { flush: { set: t.sets.get('cluster-cidrs')!.def } },
        el('add', 'cluster-cidrs', ['10.244.0.0/16', '10.250.0.0/15', '10.0.0.5']),
        { flush: { chain: t.chains.get('firewall-check')!.chain } },
        { delete: { set: t.sets.get('firewall-deny')!.def } },
        { delete: { chain: t.chains.get('pick-random-16')!.chain } },
      ],
    };
    const known = { spec: (_f: string, _t: string, s: string) => specOfDef(t.sets.get(s)!.def) };
    const theirs = await nftBatch(a!.name, renderTransaction(tx));
    const mine = ours(tx, known);
    // nft numbers the sets it read from the kernel and sends those ids with lookups of them
    // and with their elements; the kernel finds an existing set by name, so rules and element
    // messages are compared without set ids.
    const rulesOnly = (ms: { type: number; attrs: Buffer }[]) =>
      ms.filter((m) => (m.type & 0xff) === 6).map((m) => ruleKey(exprs(m.attrs)));
    assert.deepEqual(rulesOnly(mine), rulesOnly(theirs));
    const notRules = <T extends { type: number }>(ms: T[]) => ms.filter((m) => (m.type & 0xff) !== 6);
    assert.deepEqual(
      compareBatches(notRules(theirs), notRules(mine), INTERVAL_SETS, { withoutSetIds: true }),
      [],
    );
  });

  it('splits a long element list where nft does, each nest within its 16-bit length', async () => {
    await reset();
    const set = {
      family: 'ip' as const,
      table: 't',
      name: 's',
      type: ['ipv4_addr', 'inet_proto', 'inet_service'],
    };
    const lines = Array.from(
      { length: 9000 },
      (_, i) => `10.${i >> 16}.${(i >> 8) & 255}.${i & 255} . tcp . 80`,
    );
    const tx: Transaction = {
      commands: [
        { add: { table: { family: 'ip', name: 't' } } },
        { add: { set } },
        { add: { element: { family: 'ip', table: 't', name: 's', lines: [lines.join('\n')] } } },
      ],
    };
    const theirs = await nftBatch(a!.name, renderTransaction(tx));
    const mine = ours(tx);
    assert.equal(
      mine.filter((m) => (m.type & 0xff) === 12).length,
      4,
      '9000 elements of 24 bytes: 4 messages',
    );
    assert.deepEqual(compareBatches(theirs, mine, new Set()), []);
  });

  it('both backends leave the kernel listing the same ruleset, golden and random clusters, and each adopts the other’s', async () => {
    const clusters: { name: string; state: ClusterState; config: ProxyConfigInput }[] = [];
    for (const g of GOLDEN) clusters.push({ name: g.name, state: await golden(g.dir), config: g.config });
    const random = fc.sample(arbCluster, { numRuns: 8, seed: 42 });
    random.forEach((gen, i) =>
      clusters.push({
        name: `random ${i}`,
        state: build(gen),
        config: { nodeName: 'node1', clusterCIDRs: ['10.244.0.0/16', 'fd00:244::/64'] },
      }),
    );
    for (const c of clusters) {
      await reset();
      const r = compile(c.state, parseProxyConfig(c.config));
      const tx = creation(r.builder);
      await exec(a!).apply(tx);
      await netlink(b!).apply(tx);
      assert.deepEqual(await listing(b!), await listing(a!), `${c.name}: listings differ`);
      assert.deepEqual(await planned(netlink(a!), r.builder), [], `${c.name}: netlink adopts nft's tables`);
      assert.deepEqual(await planned(exec(b!), r.builder), [], `${c.name}: nft adopts netlink's tables`);
    }
  });

  it('a batch the kernel refuses halfway leaves the kernel as it was, and names the command', async () => {
    await reset();
    const r = compile(await golden('basic'), parseProxyConfig(GOLDEN[0]!.config));
    const nl = netlink(a!);
    await nl.apply(creation(r.builder));
    const before = await listing(a!);
    const el = (name: string, lines: string[]): Command => ({
      add: { element: { family: 'ip', table: TABLE, name, lines } },
    });
    const tx: Transaction = {
      commands: [
        el(Maps.backends, ['10.96.0.77 . tcp . 80 . 0 : 10.244.1.77 . 8080']),
        { add: { chain: { family: 'ip', table: TABLE, name: 'extra' } } },
        // Refused: a verdict pointing at a chain that does not exist.
        el(Maps.serviceIPs, ['10.96.0.77 . tcp . 80 : goto no-such-chain']),
        el(Sets.clusterIPs, ['10.96.0.77']),
      ],
    };
    await assert.rejects(
      nl.apply(tx),
      (e: unknown) =>
        e instanceof NftError &&
        e.kind === NftErrorKind.NotFound &&
        /service-ips/.test(e.message) &&
        /No such file or directory/.test(e.message),
    );
    assert.deepEqual(await listing(a!), before, 'nothing of the refused batch landed');
    // The connection is fine afterwards.
    await nl.apply({ commands: [el(Sets.clusterIPs, ['10.96.0.77'])] });
    assert.ok(((await nl.listElements('ip', TABLE, Sets.clusterIPs)) ?? []).includes('10.96.0.77'));
  });

  it('reports the kernel’s refusals as NftError kinds: exists, busy, not found', async () => {
    await reset();
    const r = compile(await golden('basic'), parseProxyConfig(GOLDEN[0]!.config));
    const nl = netlink(a!);
    await nl.apply(creation(r.builder));
    const kind = async (c: Command) => {
      try {
        await nl.apply({ commands: [c] });
        return 'applied';
      } catch (e) {
        return e instanceof NftError ? e.kind : String(e);
      }
    };
    const obj = (lines: string[]) => ({
      element: { family: 'ip' as const, table: TABLE, name: Maps.serviceIPs, lines },
    });
    const existing = (await nl.listElements('ip', TABLE, Maps.serviceIPs))!.find((l) =>
      l.startsWith('10.96.0.10 '),
    )!;
    assert.equal(
      await kind({ add: obj([existing.replace(/goto \S+$/, 'goto pick-random-9')]) }),
      NftErrorKind.Exists,
    );
    assert.equal(await kind({ add: obj([existing]) }), 'applied', 'the same element again is fine');
    const target = /goto (\S+)$/.exec(existing)![1]!;
    assert.equal(
      await kind({ delete: { chain: { family: 'ip', table: TABLE, name: target } } }),
      NftErrorKind.Busy,
    );
    assert.equal(await kind({ delete: obj(['10.1.2.3 . tcp . 1']) }), NftErrorKind.NotFound);
    assert.equal(await nl.describeTable('ip', 'nope'), undefined);
    assert.equal(await nl.listElements('ip', TABLE, 'nope'), undefined);
  });

  it('sees a rule deleted from outside as a chain to refill, elements removed as elements to add', async () => {
    await reset();
    const r = compile(await golden('basic'), parseProxyConfig(GOLDEN[0]!.config));
    const nl = netlink(a!);
    await nl.apply(creation(r.builder));
    await a!.run('nft', 'flush', 'chain', 'ip', TABLE, 'nat-output');
    await a!.run('nft', 'delete', 'element', 'ip', TABLE, Sets.clusterIPs, '{ 10.96.0.10 }');
    const text = renderTransaction({ commands: await planned(nl, r.builder) });
    assert.match(text, /^flush chain ip nftproxy nat-output\b/m);
    assert.match(text, /^add rule ip nftproxy nat-output jump services$/m);
    assert.match(text, /^add element ip nftproxy cluster-ips \{ 10\.96\.0\.10 \}$/m);
    assert.equal(text.trim().split('\n').length, 3, text);
  });

  for (const which of ['netlink', 'nft'] as const) {
    it(`hears others' commits to our table with their element lines, and none of the ${which} backend's own`, async () => {
      await reset();
      const r = compile(await golden('basic'), parseProxyConfig(GOLDEN[0]!.config));
      const backend = which === 'netlink' ? netlink(a!) : exec(a!);
      const heard: ForeignChange[] = [];
      let lost = 0;
      const m = new TableMonitor({
        netns: a!.name,
        table: TABLE,
        ours: (pid) => backend.ownsCommit!(pid),
        onChange: (c) => heard.push(c),
        onLost: () => lost++,
      });
      try {
        await backend.apply(creation(r.builder));
        await backend.apply({
          commands: [
            {
              delete: {
                element: { family: 'ip', table: TABLE, name: Sets.clusterIPs, lines: ['10.96.0.10'] },
              },
            },
          ],
        });
        m.readAll();
        assert.equal(heard.length, 0, 'our own commits');
        // Someone else: an element back, one away from a map, a chain flushed, another table.
        await a!.run('nft', 'add', 'element', 'ip', TABLE, Sets.clusterIPs, '{ 10.96.0.10 }');
        await a!.run('nft', 'delete', 'element', 'ip', TABLE, Maps.serviceIPs, '{ 10.96.0.10 . tcp . 80 }');
        await a!.run('nft', 'flush', 'chain', 'ip', TABLE, 'nat-output');
        await a!.run('nft', 'add', 'table', 'ip', 'other');
        m.readAll();
        assert.equal(lost, 0);
        assert.equal(heard.length, 3);
        assert.ok(heard.every((c) => c.process === 'nft' && c.pid > 0));
        assert.deepEqual(heard[0]!.tables.get('ip'), {
          skeleton: false,
          elements: new Map([[Sets.clusterIPs, [{ op: '+', line: '10.96.0.10' }]]]),
        });
        const del = heard[1]!.tables.get('ip')!.elements.get(Maps.serviceIPs);
        assert.ok(Array.isArray(del) && del.length === 1, JSON.stringify(del));
        assert.equal(del[0]!.op, '-');
        assert.match(del[0]!.line, /^10\.96\.0\.10 \. tcp \. 80 : goto /);
        assert.equal(heard[2]!.tables.get('ip')!.skeleton, true);
      } finally {
        m.close();
      }
    });
  }

  it('commits quietly: no notification is built for our own commit, and a commit by someone else meanwhile is told by the generation', async () => {
    await reset();
    const r = compile(await golden('basic'), parseProxyConfig(GOLDEN[0]!.config));
    const nl = netlink(a!);
    const heard: ForeignChange[] = [];
    let lost = 0;
    // Nobody's commits are ours: any notification that arrived would be heard.
    const m = new TableMonitor({
      netns: a!.name,
      table: TABLE,
      ours: () => false,
      onChange: (c) => heard.push(c),
      onLost: () => lost++,
    });
    try {
      const g0 = m.generation()!;
      await m.quietly(() => nl.apply(creation(r.builder)));
      m.readAll();
      assert.equal(heard.length, 0, 'our commit was not announced to us');
      assert.equal(lost, 0);
      assert.equal(m.generation(), g0 + 1);
      const del = {
        delete: {
          element: { family: 'ip' as const, table: TABLE, name: Sets.clusterIPs, lines: ['10.96.0.10'] },
        },
      };
      await m.quietly(async () => {
        await a!.run('nft', 'add', 'table', 'ip', 'meanwhile');
        return nl.apply({ commands: [del] });
      });
      m.readAll();
      assert.equal(heard.length, 0);
      assert.equal(lost, 1, 'a commit by someone else while not listening');
      // Listening again: the next commit by someone else is heard.
      await a!.run('nft', 'add', 'element', 'ip', TABLE, Sets.clusterIPs, '{ 10.96.0.10 }');
      m.readAll();
      assert.equal(heard.length, 1);
    } finally {
      m.close();
    }
  });
});

/** The NFTA_RULE_EXPRESSIONS payload of a NEWRULE message's attributes. */
function exprs(attrs: Buffer): Buffer {
  let p = 0;
  while (p + 4 <= attrs.length) {
    const len = attrs.readUInt16LE(p);
    if ((attrs.readUInt16LE(p + 2) & 0x3fff) === 4) return attrs.subarray(p + 4, p + len);
    p += (len + 3) & ~3;
  }
  return Buffer.alloc(0);
}
