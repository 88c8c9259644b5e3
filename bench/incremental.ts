/**
 * Event to kernel: one endpoint change at a time in a cluster of `services` services, through
 * the operator as it runs (store, sync queue, partial sync, the nft transaction), into a
 * throwaway network namespace holding the whole cluster's rules.
 *
 * Each change is an EndpointSlice event for a random service (seeded, so every run makes the
 * same changes): a pod replaced by another (its address changes), a pod added, or one removed,
 * in turn. The time is taken from handing the event to the operator until `nft -f` has
 * committed the transaction (`toKernel`), and until the sync is done, cleanups included
 * (`toSynced`). Changes are spaced `gapMs` apart, longer than the default minimum sync
 * interval (100 ms), so each is one sync of its own, as a quiet cluster's changes are.
 *
 * The operator runs in a child process started inside the namespace (`ip netns exec`), so that
 * it speaks to the kernel as it does on a node: over its netlink socket (`--backend netlink`,
 * the default), or by running `nft` itself (`--backend nft`), not through `ip netns exec` for
 * every command (which costs a second process start, about 8 ms here). The backend's share,
 * from the transaction handed over until the kernel committed it, is reported by kind of
 * change: where the time of an element deletion goes (kernel commit, or process start and exit).
 *
 *   npm run build:bench && node dist-bench/bench/incremental.js [--services 10000] [--changes 200] [--backend netlink] [--out DIR]
 */
import { writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { Operator } from '../src/controller/operator.js';
import { resolveSettings } from '../src/controller/settings.js';
import type { SyncResult } from '../src/controller/syncer.js';
import type { Parsed } from '../src/k8s/parse.js';
import type { EndpointSlice } from '../src/k8s/types.js';
import { ExecBackend } from '../src/nft/exec.js';
import type { NftBackend } from '../src/nft/backend.js';
import { NetlinkBackend } from '../src/nft/netlink/backend.js';
import { TableMonitor } from '../src/nft/netlink/monitor.js';
import { TABLE } from '../src/proxy/names.js';
import { MemorySource } from '../test/support/memory-source.js';
import { Netns } from '../test/support/netns.js';
import { syntheticCluster } from '../test/support/synthetic.js';
import { machine, type Machine } from './lib/machine.js';
import { formatMs, type Summary, summarize } from './lib/stats.js';

const CLUSTER_CIDR = '10.128.0.0/9';

export interface IncrementalResults {
  benchmark: 'incremental';
  command: string;
  machine: Machine;
  /** How the operator wrote to the kernel: `netlink` or `nft`. */
  backend?: string;
  services: number;
  endpoints: number;
  changes: number;
  gapMs: number;
  /** Event handed to the operator → nft transaction committed, ms. */
  toKernel: Summary;
  /** Event → the transaction handed to nft (queue, compile, diff), ms. */
  toNft: Summary;
  /** Event → sync finished (conntrack and affinity cleanups included), ms. */
  toSynced: Summary;
  /** The backend alone: transaction handed over → committed, ms; and by kind of change. */
  apply?: Summary;
  applyByKind?: Record<ChangeKind, Summary>;
  /**
   * The operator process's memory after the initial full sync and the changes (MB): resident
   * now, and the peak (maxRSS). It holds the cluster as parsed objects handed over in memory,
   * not an API client's cache of the raw ones.
   */
  rssMB: number;
  maxRssMB: number;
  /** Full sync of the cluster at the start, ms (for scale). */
  initialSyncMs: number;
  /** toKernel of every change, in order, ms. */
  samples: number[];
}

/** The kinds of change, in turn. */
export type ChangeKind = 'replace' | 'add' | 'remove';

/** Notes when each transaction is handed to `backend` and when it has been committed. */
function timed(backend: NftBackend): { startedAt: number; committedAt: number } {
  const t = { startedAt: 0, committedAt: 0 };
  const apply = backend.apply.bind(backend);
  backend.apply = async (tx) => {
    t.startedAt = performance.now();
    const stats = await apply(tx);
    t.committedAt = performance.now();
    return stats;
  };
  return t;
}

/** A small seeded PRNG (mulberry32): the same changes on every run. */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The k-th change to `slice`: replace a pod, add one, or remove one, in turn. */
function changed(slice: EndpointSlice, k: number, pod: number): { slice: EndpointSlice; kind: ChangeKind } {
  const eps = [...slice.endpoints];
  const fresh = {
    address: `10.${200 + (pod >> 16)}.${(pod >> 8) & 255}.${pod & 255}`,
    conditions: { ready: true, serving: true, terminating: false },
  };
  const kind = eps.length === 1 && k % 3 === 2 ? 1 : k % 3;
  if (kind === 0) eps[eps.length - 1] = fresh;
  else if (kind === 1) eps.push(fresh);
  else eps.pop();
  return { slice: { ...slice, endpoints: eps }, kind: (['replace', 'add', 'remove'] as const)[kind]! };
}

/** Runs the benchmark in a child process inside a fresh namespace; its results. */
export async function benchIncremental(
  services: number,
  changes: number,
  command: string,
  gapMs = 150,
  backend = 'netlink',
): Promise<IncrementalResults> {
  const ns = await Netns.create('bench');
  const self = fileURLToPath(import.meta.url);
  try {
    const { stdout } = await execa(
      'ip',
      [
        'netns',
        'exec',
        ns.name,
        process.execPath,
        // Compiled (dist-bench/), as benchmarks run; from the source, through tsx.
        ...(self.endsWith('.ts') ? ['--import', 'tsx'] : []),
        self,
        '--backend',
        backend,
        '--inside',
        ns.name,
        '--services',
        String(services),
        '--changes',
        String(changes),
        '--gap',
        String(gapMs),
      ],
      { stderr: 'inherit' },
    );
    return { ...(JSON.parse(stdout) as IncrementalResults), command };
  } finally {
    await ns.delete();
  }
}

/** The benchmark itself, in this process's network namespace (a throwaway one). */
async function runHere(
  services: number,
  changes: number,
  gapMs: number,
  backend: string,
): Promise<IncrementalResults> {
  const cluster = syntheticCluster(services);
  const slices = [...cluster.endpointSlices];
  const source = new MemorySource([
    ...cluster.services.map((object): Parsed => ({ kind: 'Service', object })),
    ...slices.map((object): Parsed => ({ kind: 'EndpointSlice', object })),
  ]);
  const nft: NftBackend = backend === 'nft' ? new ExecBackend() : new NetlinkBackend();
  const at = timed(nft);
  const synced: (SyncResult | Error)[] = [];
  let syncedAt = 0;
  const op = new Operator({
    settings: resolveSettings(
      {
        nodeName: 'n',
        clusterCIDRs: [CLUSTER_CIDR],
        healthzBindAddress: '',
        metricsBindAddress: '',
      },
      {},
      {},
    ),
    source,
    nft,
    // As `nftproxy run` does: the table watch hears every commit, ours included.
    watchTables: (h) => {
      const m = new TableMonitor({ table: TABLE, ours: (pid) => nft.ownsCommit?.(pid) ?? false, ...h });
      m.start();
      return m;
    },
    onSync: (r) => {
      syncedAt = performance.now();
      synced.push(r);
    },
  });
  try {
    const started = performance.now();
    await op.start();
    await op.queue.idle();
    const initialSyncMs = syncedAt - started;
    if (!(synced[0] && !(synced[0] instanceof Error) && synced[0].full))
      throw new Error(`the initial full sync failed: ${String(synced[0])}`);
    const rand = random(7);
    const toKernel: number[] = [];
    const toSynced: number[] = [];
    const toNft: number[] = [];
    const applied: number[] = [];
    const byKind: Record<ChangeKind, number[]> = { replace: [], add: [], remove: [] };
    for (let k = 0; k < changes; k++) {
      const i = Math.floor(rand() * slices.length);
      const { slice, kind } = changed(slices[i]!, k, k + 1);
      slices[i] = slice;
      const before = synced.length;
      const t0 = performance.now();
      source.apply({ kind: 'EndpointSlice', object: slice });
      await op.queue.idle();
      const r = synced[before];
      if (synced.length !== before + 1 || !r || r instanceof Error || r.full || !r.commands)
        throw new Error(`change ${k}: expected one partial sync with commands, got ${String(r)}`);
      toKernel.push(at.committedAt - t0);
      toNft.push(at.startedAt - t0);
      applied.push(at.committedAt - at.startedAt);
      byKind[kind].push(at.committedAt - at.startedAt);
      toSynced.push(syncedAt - t0);
      await new Promise((resolve) => setTimeout(resolve, gapMs));
    }
    return {
      benchmark: 'incremental',
      command: '',
      machine: await machine(),
      backend,
      services,
      endpoints: cluster.endpointSlices.reduce((n, s) => n + s.endpoints.length, 0),
      changes,
      gapMs,
      toKernel: summarize(toKernel),
      toNft: summarize(toNft),
      toSynced: summarize(toSynced),
      apply: summarize(applied),
      applyByKind: {
        replace: summarize(byKind.replace),
        add: summarize(byKind.add),
        remove: summarize(byKind.remove),
      },
      initialSyncMs,
      rssMB: Math.round(process.memoryUsage().rss / 2 ** 20),
      maxRssMB: Math.round(process.resourceUsage().maxRSS / 1024),
      samples: toKernel.map((x) => Math.round(x * 1000) / 1000),
    };
  } finally {
    await op.stop();
    nft.close?.();
  }
}

/** The results as markdown. */
export function incrementalMarkdown(r: IncrementalResults): string {
  const row = (what: string, s: Summary) =>
    `| ${what} | ${formatMs(s.median)} | ${formatMs(s.p99)} | ${formatMs(s.min)} | ${formatMs(s.max)} |`;
  return [
    `<!-- ${r.command} ; ${r.machine.date}, kernel ${r.machine.kernel}, nft ${r.machine.nft}, Node ${r.machine.node}, ${r.machine.cpus} CPUs -->`,
    `${r.changes} single-endpoint changes, one at a time (${r.gapMs} ms apart), at ${r.services} services / ${r.endpoints} endpoints, ${r.backend ?? 'nft'} backend (initial full sync ${formatMs(r.initialSyncMs)}; operator RSS ${r.rssMB} MB, peak ${r.maxRssMB} MB):`,
    '',
    '| from the EndpointSlice event to | median | p99 | min | max |',
    '| --- | --- | --- | --- | --- |',
    row('the transaction handed to the backend', r.toNft),
    row('the transaction committed', r.toKernel),
    ...(r.apply ? [row('(the backend alone: handed over to committed)', r.apply)] : []),
    ...(r.applyByKind
      ? (Object.entries(r.applyByKind) as [ChangeKind, Summary][]).map(([k, s]) =>
          row(
            `(the backend alone, ${k === 'replace' ? 'a pod replaced' : k === 'add' ? 'a pod added' : 'a pod removed'})`,
            s,
          ),
        )
      : []),
    '',
  ].join('\n');
}

/** Writes `incremental.json` and `incremental.md` into `dir`. */
export async function writeIncremental(dir: string, r: IncrementalResults): Promise<void> {
  await writeFile(join(dir, 'incremental.json'), JSON.stringify(r, null, 2) + '\n');
  await writeFile(join(dir, 'incremental.md'), incrementalMarkdown(r));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    options: {
      services: { type: 'string', default: '10000' },
      changes: { type: 'string', default: '200' },
      gap: { type: 'string', default: '150' },
      backend: { type: 'string', default: 'netlink' },
      inside: { type: 'string' },
      out: { type: 'string' },
    },
  });
  if (values.inside) {
    // It programs the namespace it runs in: only the throwaway one named, never the machine's.
    const { stdout: here } = await execa('ip', ['netns', 'identify', String(process.pid)]);
    if (!values.inside.startsWith('nftp-bench-') || here.trim() !== values.inside)
      throw new Error(`--inside NS: not in the bench namespace ${values.inside} (in "${here.trim()}")`);
    const r = await runHere(
      Number(values.services),
      Number(values.changes),
      Number(values.gap),
      values.backend,
    );
    process.stdout.write(JSON.stringify(r));
    process.exit(0);
  }
  const r = await benchIncremental(
    Number(values.services),
    Number(values.changes),
    `node dist-bench/bench/incremental.js --services ${values.services} --changes ${values.changes} --backend ${values.backend}`,
    150,
    values.backend,
  );
  process.stdout.write(incrementalMarkdown(r));
  if (values.out) await writeIncremental(values.out, r);
}
