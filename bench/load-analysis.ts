/**
 * Where a full sync of a large cluster goes, step by step: the analysis behind the netlink
 * backend. Each load runs into a fresh network namespace; medians of `reps`.
 *
 * - compile: the RulesetBuilder for the cluster, as a full sync builds it (in this process);
 * - the creation as nft text: rendering it, `nft -f` of its skeleton alone (tables, chains,
 *   sets, rules: every line but the elements), and `nft -f` of all of it;
 * - the creation as one netlink batch: encoding it (BatchEncoder), and the kernel committing
 *   it (one datagram, the time send(2) takes; the kernel applies a batch inside the call);
 * - then, into the loaded tables, single-element commits over netlink, `singles` of each: an
 *   element added to and deleted from a plain set (`cluster-ips`), and from the verdict map
 *   `service-ips` (whose elements jump to chains): where one endpoint change's time goes.
 *
 *   npm run build:bench && node dist-bench/bench/load-analysis.js [--services 50000] [--reps 3] [--out DIR]
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { execa } from 'execa';
import { createTable, emptyStats } from '../src/nft/diff.js';
import type { Transaction } from '../src/nft/ir.js';
import { type Batch, BatchEncoder } from '../src/nft/netlink/batch.js';
import type { SetSpec } from '../src/nft/netlink/datatypes.js';
import { NetlinkConnection } from '../src/nft/netlink/connection.js';
import { renderTransaction } from '../src/nft/render.js';
import { buildRuleset, nodeIPsOf, stateSource } from '../src/proxy/compile.js';
import { Maps, Sets } from '../src/proxy/names.js';
import { parseProxyConfig } from '../src/proxy/config.js';
import { Netns } from '../test/support/netns.js';
import { syntheticCluster } from '../test/support/synthetic.js';
import { machine, type Machine } from './lib/machine.js';
import { formatMs, type Summary, summarize } from './lib/stats.js';

export interface LoadAnalysis {
  benchmark: 'load-analysis';
  command: string;
  machine: Machine;
  services: number;
  endpoints: number;
  reps: number;
  /** The script: bytes, element lines, and the share of its bytes they are. */
  script: { bytes: number; elements: number; elementShare: number };
  /** The batch: bytes and messages. */
  batch: { bytes: number; messages: number };
  times: {
    compile: Summary;
    render: Summary;
    nftSkeleton: Summary;
    nftAll: Summary;
    encode: Summary;
    commit: Summary;
    setAdd: Summary;
    setDelete: Summary;
    vmapAdd: Summary;
    vmapDelete: Summary;
  };
}

async function timed(fn: () => Promise<unknown> | unknown): Promise<number> {
  const start = performance.now();
  await fn();
  return performance.now() - start;
}

async function inFresh(run: (ns: Netns) => Promise<number>): Promise<number> {
  const ns = await Netns.create('bench');
  try {
    return await run(ns);
  } finally {
    await ns.delete();
  }
}

/** Single-element commits into the loaded tables, `n` of each kind (`created`: their sets' layouts). */
function singles(
  conn: NetlinkConnection,
  created: Map<string, SetSpec>,
  t: Record<keyof LoadAnalysis['times'], number[]>,
  n: number,
): void {
  const known = { spec: (f: string, tb: string, set: string) => created.get(`${f} ${tb} ${set}`) };
  const one = (op: 'add' | 'delete', name: string, line: string): number => {
    const element = { family: 'ip' as const, table: 'nftproxy', name, lines: [line] };
    const tx: Transaction = { commands: [op === 'add' ? { add: { element } } : { delete: { element } }] };
    const start = performance.now();
    const batch = BatchEncoder.encode(tx, known, conn.nextSeq(4));
    NetlinkConnection.check(conn.sendBatch(batch.buf, batch.messages));
    return performance.now() - start;
  };
  for (let i = 0; i < n; i++) {
    const ip = `10.99.${i >> 8}.${i & 255}`;
    t.setAdd.push(one('add', Sets.clusterIPs, ip));
    t.setDelete.push(one('delete', Sets.clusterIPs, ip));
    t.vmapAdd.push(one('add', Maps.serviceIPs, `${ip} . tcp . 80 : goto reject-chain`));
    t.vmapDelete.push(one('delete', Maps.serviceIPs, `${ip} . tcp . 80 : goto reject-chain`));
  }
}

/** Runs the analysis. */
export async function analyzeLoad(services: number, reps: number, command: string): Promise<LoadAnalysis> {
  const config = parseProxyConfig({ nodeName: 'n', clusterCIDRs: ['10.128.0.0/9'] });
  const cluster = syntheticCluster(services);
  const t: Record<keyof LoadAnalysis['times'], number[]> = {
    compile: [],
    render: [],
    nftSkeleton: [],
    nftAll: [],
    encode: [],
    commit: [],
    setAdd: [],
    setDelete: [],
    vmapAdd: [],
    vmapDelete: [],
  };
  let tx: Transaction = { commands: [] };
  for (let r = 0; r < reps; r++) {
    t.compile.push(
      await timed(() => {
        // What a full sync compiles: the builder, no IR ruleset (compile() makes one for the tools).
        const builder = buildRuleset(config, nodeIPsOf(cluster, config), stateSource(cluster, config));
        const stats = emptyStats();
        tx = {
          commands: builder.tableKeys().flatMap((tk) => createTable(builder.desired(tk), stats, false)),
        };
      }),
    );
  }
  let script = '';
  for (let r = 0; r < reps; r++) t.render.push(await timed(() => (script = renderTransaction(tx))));
  const lines = script.split('\n');
  const elementLines = lines.filter((l) => l.startsWith('add element '));
  const skeleton = lines.filter((l) => !l.startsWith('add element ')).join('\n');
  const elementBytes = elementLines.reduce((n, l) => n + l.length + 1, 0);
  const nft = (ns: Netns, text: string) =>
    timed(() => execa('ip', ['netns', 'exec', ns.name, 'nft', '-f', '-'], { input: text }));
  let batch: Batch | undefined;
  for (let r = 0; r < reps; r++) {
    t.nftSkeleton.push(await inFresh((ns) => nft(ns, skeleton)));
    t.nftAll.push(await inFresh((ns) => nft(ns, script)));
    t.commit.push(
      await inFresh(async (ns) => {
        const conn = new NetlinkConnection({ netns: ns.name });
        try {
          const seq = conn.nextSeq(tx.commands.length * 2 + 1024);
          t.encode.push(await timed(() => (batch = BatchEncoder.encode(tx, { spec: () => undefined }, seq))));
          const b = batch!;
          let failures: ReturnType<NetlinkConnection['sendBatch']> = [];
          const ms = await timed(() => (failures = conn.sendBatch(b.buf, b.messages)));
          NetlinkConnection.check(failures);
          if (r === reps - 1) singles(conn, b.created, t, 20);
          return ms;
        } finally {
          conn.close();
        }
      }),
    );
  }
  return {
    benchmark: 'load-analysis',
    command,
    machine: await machine(),
    services,
    endpoints: cluster.endpointSlices.reduce((n, s) => n + s.endpoints.length, 0),
    reps,
    script: {
      bytes: Buffer.byteLength(script),
      elements: elementLines.reduce((n, l) => n + (l.match(/,/g)?.length ?? 0) + 1, 0),
      elementShare: elementBytes / Math.max(1, script.length),
    },
    batch: { bytes: batch?.buf.length ?? 0, messages: batch?.messages.length ?? 0 },
    times: Object.fromEntries(Object.entries(t).map(([k, v]) => [k, summarize(v)])) as LoadAnalysis['times'],
  };
}

/** The results as markdown. */
export function loadMarkdown(r: LoadAnalysis): string {
  const row = (what: string, s: Summary) =>
    `| ${what} | ${formatMs(s.median)} | ${formatMs(s.min)} | ${formatMs(s.max)} |`;
  const t = r.times;
  return [
    `<!-- ${r.command} ; ${r.machine.date}, kernel ${r.machine.kernel}, nft ${r.machine.nft}, Node ${r.machine.node}, ${r.machine.cpus} CPUs -->`,
    `Creating the tables of ${r.services} services / ${r.endpoints} endpoints, step by step, ${r.reps} runs (the script: ${(r.script.bytes / 1e6).toFixed(1)} MB, ${(r.script.elementShare * 100).toFixed(1)}% of it ${r.script.elements} element lines; the batch: ${(r.batch.bytes / 1e6).toFixed(1)} MB in ${r.batch.messages} messages):`,
    '',
    '| step | median | min | max |',
    '| --- | --- | --- | --- |',
    row('compile (RulesetBuilder) and the creation commands', t.compile),
    row('render the nft script', t.render),
    row('nft -f, the skeleton alone (no elements)', t.nftSkeleton),
    row('nft -f, all of it', t.nftAll),
    row('encode the netlink batch', t.encode),
    row('the kernel commits the batch', t.commit),
    row('then: one element added to a set (cluster-ips), encode and commit', t.setAdd),
    row('then: one element deleted from a set', t.setDelete),
    row('then: one element added to a verdict map (service-ips)', t.vmapAdd),
    row('then: one element deleted from a verdict map', t.vmapDelete),
    '',
  ].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    options: {
      services: { type: 'string', default: '50000' },
      reps: { type: 'string', default: '3' },
      out: { type: 'string' },
    },
  });
  const r = await analyzeLoad(
    Number(values.services),
    Number(values.reps),
    `node dist-bench/bench/load-analysis.js --services ${values.services} --reps ${values.reps}`,
  );
  process.stdout.write(loadMarkdown(r));
  if (values.out) {
    await writeFile(join(values.out, 'load-analysis.json'), JSON.stringify(r, null, 2) + '\n');
    await writeFile(join(values.out, 'load-analysis.md'), loadMarkdown(r));
  }
}
