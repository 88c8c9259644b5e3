/**
 * Operator memory through the Kubernetes API path: an API server (the test stand-in, in a
 * process of its own) holding `services` Services and EndpointSlices shaped like the real
 * controllers' (bench/../test/support/api-objects.ts), and `nftproxy run --kubeconfig`
 * (compiled, in a process of its own, as on a node) programming a throwaway network namespace
 * (`--netns`). The operator's resident memory is read from /proc: when its first full sync is
 * done, at its peak (VmHWM) over the run, and steady, after `changes` EndpointSlice changes
 * (one every `gapMs`) and a pause.
 *
 *   npm run build:bench && node dist-bench/bench/memory.js [--services 50000] [--changes 100] [--backend netlink]
 */
import type { Readable } from 'node:stream';
import { readFile, writeFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { execa } from 'execa';
import { Netns } from '../test/support/netns.js';
import { machine, type Machine } from './lib/machine.js';
import { nftproxyCommand, repoPath } from './lib/paths.js';

export interface MemoryResults {
  benchmark: 'memory';
  command: string;
  machine: Machine;
  backend: string;
  services: number;
  endpoints: number;
  changes: number;
  /** The first full sync, from the operator's log: ms. */
  initialSyncMs: number;
  /** Resident memory when the first full sync was done, MB. */
  rssAfterSyncMB: number;
  /** Resident memory after the changes and a pause, MB. */
  rssSteadyMB: number;
  /** The highest resident memory of the run (VmHWM), MB. */
  peakMB: number;
  /** Full syncs over the run: 1 (the first) unless something made the operator start over. */
  fullSyncs?: number;
}

type Line = { msg?: string; durationMs?: number; full?: boolean };

/** VmRSS and VmHWM of a process, MB. */
async function memoryOf(pid: number): Promise<{ rss: number; hwm: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0);
  return { rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024 };
}

/** Runs the measurement; the results. */
export async function benchMemory(
  services: number,
  changes: number,
  command: string,
  backend = 'netlink',
  gapMs = 150,
): Promise<MemoryResults> {
  const [node, cli] = nftproxyCommand() as [string, string];
  const api = execa(node, [repoPath('dist-bench', 'bench', 'lib', 'api-serve.js'), String(services)], {
    stdin: 'pipe',
    stdout: 'pipe',
    stderr: 'inherit',
    buffer: false,
  });
  const apiLines: string[] = [];
  const apiWaiters: ((l: string) => void)[] = [];
  let apiBuf = '';
  api.stdout!.on('data', (d: Buffer) => {
    apiBuf += d.toString();
    for (let i = apiBuf.indexOf('\n'); i >= 0; i = apiBuf.indexOf('\n')) {
      const line = apiBuf.slice(0, i);
      apiBuf = apiBuf.slice(i + 1);
      const w = apiWaiters.shift();
      if (w) w(line);
      else apiLines.push(line);
    }
  });
  const nextApiLine = () =>
    new Promise<string>((resolve) => {
      const l = apiLines.shift();
      if (l !== undefined) resolve(l);
      else apiWaiters.push(resolve);
    });
  const dir = await mkdtemp(join(tmpdir(), 'nftproxy-bench-'));
  const ns = await Netns.create('bench');
  let op:
    | (PromiseLike<unknown> & {
        stderr: Readable | null;
        pid?: number | undefined;
        kill(signal?: NodeJS.Signals): boolean;
      })
    | undefined;
  try {
    const { port } = JSON.parse(await nextApiLine()) as { port: number };
    const kubeconfig = join(dir, 'kubeconfig');
    await writeFile(
      kubeconfig,
      [
        'apiVersion: v1',
        'kind: Config',
        'clusters: [{ name: bench, cluster: { server: "http://127.0.0.1:' +
          port +
          '", insecure-skip-tls-verify: true } }]',
        'users: [{ name: bench, user: {} }]',
        'contexts: [{ name: bench, context: { cluster: bench, user: bench } }]',
        'current-context: bench',
      ].join('\n') + '\n',
    );
    op = execa(
      node,
      [
        // Extra options for the operator's Node (experiments: --max-semi-space-size=...).
        ...(process.env.BENCH_NODE_OPTIONS?.split(' ').filter(Boolean) ?? []),
        cli,
        'run',
        '--kubeconfig',
        kubeconfig,
        '--node',
        'node-0',
        '--netns',
        ns.name,
        '--backend',
        backend,
        '--cluster-cidr',
        '10.128.0.0/9',
        '--healthz-bind-address',
        '',
        '--metrics-bind-address',
        '',
      ],
      { reject: false, buffer: false, stdout: 'ignore', stderr: 'pipe' },
    );
    const syncs: Line[] = [];
    let errBuf = '';
    const waiters: (() => void)[] = [];
    op.stderr!.on('data', (d: Buffer) => {
      errBuf += d.toString();
      for (let i = errBuf.indexOf('\n'); i >= 0; i = errBuf.indexOf('\n')) {
        const line = errBuf.slice(0, i);
        errBuf = errBuf.slice(i + 1);
        try {
          const l = JSON.parse(line) as Line;
          if (l.msg === 'synced') {
            syncs.push(l);
            for (const w of waiters.splice(0)) w();
          }
        } catch {
          process.stderr.write(`operator: ${line}\n`);
        }
        if (process.env.BENCH_VERBOSE && line.includes('"heap"')) process.stderr.write(`${line}\n`);
      }
    });
    const syncsReach = (n: number, timeoutMs: number) =>
      new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no ${n} syncs within ${timeoutMs} ms`)), timeoutMs);
        const check = () => (syncs.length >= n ? (clearTimeout(t), resolve()) : waiters.push(check));
        check();
      });
    const pid = op.pid!;
    const started = Date.now();
    const timeline: string[] = [];
    const sampler = setInterval(() => {
      void memoryOf(pid)
        .then((m) =>
          timeline.push(
            `${((Date.now() - started) / 1000).toFixed(1)}s ${Math.round(m.rss)} MB, syncs ${syncs.length}`,
          ),
        )
        .catch(() => undefined);
    }, 500);
    await syncsReach(1, 600_000);
    const afterSync = await memoryOf(pid);
    for (let k = 0; k < changes; k++) {
      api.stdin!.write(`change ${(k * 7919) % services}\n`);
      await nextApiLine();
      await new Promise((r) => setTimeout(r, gapMs));
    }
    await syncsReach(2, 30_000);
    await new Promise((r) => setTimeout(r, 3000));
    const steady = await memoryOf(pid);
    clearInterval(sampler);
    if (process.env.BENCH_VERBOSE)
      process.stderr.write(`operator RSS over time:\n  ${timeline.join('\n  ')}\n`);
    return {
      benchmark: 'memory',
      command,
      machine: await machine(),
      backend,
      services,
      endpoints: Array.from({ length: services }, (_, i) => 1 + (i % 10)).reduce((a, b) => a + b, 0),
      changes,
      initialSyncMs: syncs[0]!.durationMs ?? 0,
      rssAfterSyncMB: Math.round(afterSync.rss),
      rssSteadyMB: Math.round(steady.rss),
      peakMB: Math.round(steady.hwm),
      fullSyncs: syncs.filter((l) => l.full).length,
    };
  } finally {
    op?.kill('SIGTERM');
    await op;
    api.stdin!.end();
    await api;
    await ns.delete();
    await rm(dir, { recursive: true, force: true });
  }
}

/** The results as markdown. */
export function memoryMarkdown(r: MemoryResults): string {
  return [
    `<!-- ${r.command} ; ${r.machine.date}, kernel ${r.machine.kernel}, Node ${r.machine.node}, ${r.machine.cpus} CPUs -->`,
    `Operator memory through the API path, ${r.services} services / ${r.endpoints} endpoints, ${r.backend} backend (first full sync ${(r.initialSyncMs / 1000).toFixed(2)} s, from its log; ${r.fullSyncs ?? '?'} full sync(s) in the run):`,
    '',
    '| after the first full sync | steady, after ' + r.changes + ' changes | peak (VmHWM) |',
    '| --- | --- | --- |',
    `| ${r.rssAfterSyncMB} MB | ${r.rssSteadyMB} MB | ${r.peakMB} MB |`,
    '',
  ].join('\n');
}

/** Writes `memory.json` and `memory.md` into `dir`. */
export async function writeMemory(dir: string, r: MemoryResults): Promise<void> {
  await writeFile(join(dir, 'memory.json'), JSON.stringify(r, null, 2) + '\n');
  await writeFile(join(dir, 'memory.md'), memoryMarkdown(r));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    options: {
      services: { type: 'string', default: '50000' },
      changes: { type: 'string', default: '100' },
      backend: { type: 'string', default: 'netlink' },
      out: { type: 'string' },
    },
  });
  const r = await benchMemory(
    Number(values.services),
    Number(values.changes),
    `node dist-bench/bench/memory.js --services ${values.services} --changes ${values.changes} --backend ${values.backend}`,
    values.backend,
  );
  process.stdout.write(memoryMarkdown(r));
  if (values.out) await writeMemory(values.out, r);
}
