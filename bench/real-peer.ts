/**
 * nftproxy beside a real kube-proxy, both fed by a real API server. kube-apiserver v1.20.2
 * with etcd (test/support/kube-apiserver.ts, built by scripts/kube-build) gets `services`
 * Services shaped like a real cluster's (test/support/api-objects.ts; the server allocates
 * the ClusterIPs), each with an EndpointSlice (v1, served by a CRD on 1.20) and a core
 * Endpoints object. Then, one after the other, each proxy runs in a network namespace of its
 * own against that server, and its first full sync and its syncs after `changes` endpoint
 * changes (one pod address replaced, one change a second) are measured from its own logs:
 *
 * - nftproxy: `nftproxy run --kubeconfig` (compiled, as on a node), its `synced` lines.
 * - kube-proxy v1.20.2 in iptables mode (the same binary tree): `syncProxyRules took` at -v=2,
 *   and its `kubeproxy_sync_proxy_rules_duration_seconds` histogram. 1.20 reads EndpointSlices
 *   only as v1beta1, which this server does not serve, so it runs with
 *   `--feature-gates=EndpointSliceProxying=false` on the Endpoints objects. Its conntrack
 *   sysctls are turned off (they are not the namespace's to set) and its OOM score left alone.
 *
 * This is kube-proxy 1.20: every sync is one iptables-restore of the whole ruleset (current
 * kube-proxy in iptables mode writes the same shape, with partial syncs since 1.27); it is
 * here because it is the kube-proxy that can be built on this machine, not the latest.
 *
 *   npm run build:bench && node dist-bench/bench/real-peer.js [--services 1000,10000] [--changes 3] [--limit SECONDS]
 *
 * `--limit` (default 300 s) gives up on a proxy whose first sync has not ended by then.
 */
import type { Readable } from 'node:stream';
import { mkdirSync, rmSync, symlinkSync } from 'node:fs';
import { writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { execa } from 'execa';
import { apiCluster } from '../test/support/api-objects.js';
import { KUBE_BIN, RealApiServer, realApiServerMissing } from '../test/support/kube-apiserver.js';
import { Netns } from '../test/support/netns.js';
import { machine, type Machine } from './lib/machine.js';
import { nftproxyCommand, repoPath } from './lib/paths.js';
import { formatMs as f, summarize } from './lib/stats.js';

const median = (xs: number[]) => (xs.length ? summarize(xs).median : NaN);

/** One proxy's figures at one size. */
export interface ProxyFigures {
  /** From the process start to the end of its first full sync, wall clock: ms. */
  readyMs: number;
  /** The first full sync as the proxy logs it: ms. */
  firstSyncMs: number;
  /** The syncs that programmed the changes, as logged: ms each. */
  changeSyncMs: number[];
  /** Rules or elements in the kernel after the first sync (how much it wrote). */
  programmed: string;
  /** Set when the first sync had not ended after this long (ms): the run was given up. */
  unfinishedAfterMs?: number;
  /** Set when the sync after a change had not ended after this long (ms): changes stopped there. */
  unfinishedChangeAfterMs?: number;
  /** The first error lines the proxy logged (klog `E...` lines, nftproxy `"level":"error"`). */
  errors?: string[];
}

export interface PeerRun {
  services: number;
  endpoints: number;
  /** Creating every Service, EndpointSlice and Endpoints through the API: ms. */
  createMs: number;
  nftproxy: ProxyFigures;
  /** kube-proxy with iptables-nft. */
  kubeProxy: ProxyFigures;
  /** kube-proxy with iptables-legacy. */
  kubeProxyLegacy: ProxyFigures;
}

export interface PeerResults {
  benchmark: 'real-peer';
  command: string;
  machine: Machine;
  kubeProxyVersion: string;
  changes: number;
  runs: PeerRun[];
}

type Obj = Record<string, unknown> & { metadata: Record<string, unknown> };

/**
 * What a client writes: no server-set metadata, no ClusterIP (the server allocates it), and no
 * generateName (with a name given, a name conflict on replace comes back as 500 ServerTimeout).
 */
function forCreate(o: object): Obj {
  const { metadata, ...rest } = structuredClone(o) as Obj;
  const meta = { ...metadata };
  for (const k of [
    'uid',
    'resourceVersion',
    'creationTimestamp',
    'managedFields',
    'ownerReferences',
    'generation',
    'generateName',
  ])
    delete meta[k];
  const out: Obj = { ...rest, metadata: meta };
  const spec = out.spec as { clusterIP?: string; clusterIPs?: string[] } | undefined;
  if (spec) {
    delete spec.clusterIP;
    delete spec.clusterIPs;
  }
  delete out.status;
  return out;
}

/** The core v1 Endpoints object kube-proxy 1.20 reads, from an EndpointSlice. */
function endpointsOf(slice: Obj, service: string): Obj {
  const s = slice as unknown as {
    endpoints: { addresses: string[]; nodeName?: string; targetRef?: Record<string, unknown> }[];
    ports: { name: string; port: number; protocol: string }[];
  };
  return {
    apiVersion: 'v1',
    kind: 'Endpoints',
    metadata: { name: service, namespace: 'default', labels: { app: service } },
    subsets: [
      {
        addresses: s.endpoints.map((e) => ({
          ip: e.addresses[0],
          ...(e.nodeName ? { nodeName: e.nodeName } : {}),
          ...(e.targetRef
            ? { targetRef: { kind: 'Pod', namespace: 'default', name: e.targetRef.name } }
            : {}),
        })),
        ports: s.ports.map((p) => ({ name: p.name, port: p.port, protocol: p.protocol })),
      },
    ],
  };
}

/** Runs `fn` over `items`, `concurrency` at a time. */
async function pool<T>(items: T[], concurrency: number, fn: (t: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

/** A proxy process whose stderr lines are kept and waited on. */
class Proc {
  readonly lines: string[] = [];
  private waiters: (() => void)[] = [];
  private buf = '';

  constructor(
    readonly p: PromiseLike<unknown> & {
      stderr: Readable | null;
      stdout: Readable | null;
      kill(signal?: NodeJS.Signals): boolean;
    },
  ) {
    const take = (d: Buffer) => {
      this.buf += d.toString();
      for (let i = this.buf.indexOf('\n'); i >= 0; i = this.buf.indexOf('\n')) {
        this.lines.push(this.buf.slice(0, i));
        this.buf = this.buf.slice(i + 1);
        for (const w of this.waiters.splice(0)) w();
      }
    };
    p.stderr?.on('data', take);
    p.stdout?.on('data', take);
  }

  /** Resolves with the matches once `count` lines from line `from` on match. */
  until(re: RegExp, count: number, timeoutMs: number, from = 0): Promise<RegExpExecArray[]> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(
        () =>
          reject(
            new Error(
              `not ${count} of ${re} within ${timeoutMs} ms; last:\n${this.lines.slice(-10).join('\n')}`,
            ),
          ),
        timeoutMs,
      );
      const check = () => {
        const m = this.lines
          .slice(from)
          .map((l) => re.exec(l))
          .filter((x): x is RegExpExecArray => x !== null);
        if (m.length >= count) {
          clearTimeout(t);
          resolve(m);
        } else this.waiters.push(check);
      };
      check();
    });
  }

  async stop(): Promise<void> {
    this.p.kill('SIGTERM');
    await this.p;
  }
}

/** A directory whose iptables, iptables-save and iptables-restore (and ip6tables ones) are `variant`'s. */
function iptablesDir(variant: 'nft' | 'legacy'): string {
  const dir = join(tmpdir(), `nftproxy-iptables-${variant}`);
  mkdirSync(dir, { recursive: true });
  for (const fam of ['iptables', 'ip6tables'])
    for (const suffix of ['', '-save', '-restore']) {
      const link = join(dir, `${fam}${suffix}`);
      rmSync(link, { force: true });
      symlinkSync(`/usr/sbin/${fam}-${variant}${suffix}`, link);
    }
  return dir;
}

/** Go's time.Duration text (`1.2345s`, `980.1ms`, `45µs`, `1m2.5s`) in ms. */
export function goDurationMs(text: string): number {
  let ms = 0;
  for (const m of text.matchAll(/([\d.]+)(h|ms|m|s|µs|us|ns)/g)) {
    const v = Number(m[1]);
    ms += { h: 3_600_000, m: 60_000, s: 1000, ms: 1, µs: 1e-3, us: 1e-3, ns: 1e-6 }[m[2]!]! * v;
  }
  return ms;
}

const NFTPROXY_SYNCED = /"msg":"synced".*"durationMs":(\d+(?:\.\d+)?)/;
const KUBE_PROXY_SYNCED = /syncProxyRules took (\S+)/;

/** Replaces one pod of service `i`: its EndpointSlice and Endpoints. */
async function change(
  api: RealApiServer,
  slices: Obj[],
  names: string[],
  i: number,
  k: number,
): Promise<void> {
  const slice = structuredClone(slices[i]!) as Obj & { endpoints: { addresses: string[] }[] };
  slice.endpoints[slice.endpoints.length - 1]!.addresses = [`10.${250}.${(k >> 8) & 255}.${k & 255}`];
  slices[i] = slice;
  await api.apply(slice as never);
  await api.apply(endpointsOf(slice, names[i]!) as never);
}

/** One size: create, then nftproxy, then kube-proxy. */
async function runSize(
  api: RealApiServer,
  services: number,
  changes: number,
  offset: number,
  firstSyncLimitMs: number,
): Promise<PeerRun> {
  const cluster = apiCluster(services);
  const svcs = cluster.services.map((o) => ({ apiVersion: 'v1', kind: 'Service', ...forCreate(o) }));
  const slices = cluster.endpointSlices.map((o) => ({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    ...forCreate(o),
  }));
  const names = svcs.map((s) => s.metadata.name as string);
  const t0 = Date.now();
  await pool(
    svcs.map((s, i) => [s, slices[i]!, i] as const),
    16,
    async ([s, slice, i]) => {
      await api.apply(s as never);
      await api.apply(slice as never);
      await api.apply(endpointsOf(slice, names[i]!) as never);
    },
  );
  const createMs = Date.now() - t0;
  const endpoints = Array.from({ length: services }, (_, i) => 1 + (i % 10)).reduce((a, b) => a + b, 0);
  process.stderr.write(`real-peer: ${services} services created through the API in ${createMs} ms\n`);

  let k = offset;
  const measure = async (
    start: (ns: Netns) => Proc,
    synced: RegExp,
    toMs: (m: RegExpExecArray) => number,
    programmed: (ns: Netns) => Promise<string>,
  ): Promise<ProxyFigures> => {
    const ns = await Netns.create('peer');
    let proc: Proc | undefined;
    // kube-proxy runs inside the namespace, as on a node: the API server must be reachable there.
    const unreach = await api.reachableFrom(ns);
    const errorsOf = () => {
      const e = (proc?.lines ?? [])
        .filter((l) => /^E\d{4} /.test(l) || l.includes('"level":"error"'))
        .slice(0, 5);
      return e.length ? { errors: e } : {};
    };
    try {
      const started = Date.now();
      proc = start(ns);
      const first = (await proc.until(synced, 1, firstSyncLimitMs).catch(() => []))[0];
      if (!first)
        return {
          readyMs: NaN,
          firstSyncMs: NaN,
          changeSyncMs: [],
          programmed: `nothing: no first sync within ${firstSyncLimitMs / 1000} s`,
          unfinishedAfterMs: firstSyncLimitMs,
          ...errorsOf(),
        };
      const readyMs = Date.now() - started;
      const changeSyncMs: number[] = [];
      for (let c = 0; c < changes; c++) {
        // Quiet first, so that the syncs after `before` are this change's.
        await new Promise((r) => setTimeout(r, 1000));
        const before = proc.lines.length;
        await change(api, slices, names, (c * 7919) % services, ++k);
        // A sync that does not end within the limit ends the measurement of this proxy.
        if (!(await proc.until(synced, 1, firstSyncLimitMs, before).catch(() => undefined))) {
          return {
            readyMs,
            firstSyncMs: toMs(first),
            changeSyncMs,
            programmed: await programmed(ns),
            unfinishedChangeAfterMs: firstSyncLimitMs,
            ...errorsOf(),
          };
        }
        await new Promise((r) => setTimeout(r, 200));
        for (const m of await proc.until(synced, 1, 0, before)) changeSyncMs.push(toMs(m));
      }
      return {
        readyMs,
        firstSyncMs: toMs(first),
        changeSyncMs,
        programmed: await programmed(ns),
        ...errorsOf(),
      };
    } finally {
      await proc?.stop();
      // A proxy stopped mid-sync leaves its iptables-restore running in the namespace.
      const pids = (await ns.run('ip', 'netns', 'pids', ns.name).catch(() => ({ stdout: '' }))).stdout;
      for (const pid of pids.split('\n').filter(Boolean)) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          // gone
        }
      }
      await unreach();
      await ns.delete();
    }
  };

  const [node, cli] = nftproxyCommand() as [string, string];
  const nftproxy = await measure(
    (ns) =>
      new Proc(
        execa(
          node,
          [
            cli,
            'run',
            '--kubeconfig',
            api.kubeconfigPath,
            '--node',
            'node-0',
            '--netns',
            ns.name,
            '--cluster-cidr',
            '10.128.0.0/9',
            '--healthz-bind-address',
            '',
            '--metrics-bind-address',
            '',
          ],
          { reject: false, buffer: false, stdout: 'ignore', stderr: 'pipe' },
        ),
      ),
    NFTPROXY_SYNCED,
    (m) => Number(m[1]),
    async (ns) => {
      const { stdout } = await ns.run('nft', '-j', 'list', 'map', 'ip', 'nftproxy', 'service-ips');
      const n = (JSON.parse(stdout) as { nftables: { map?: { elem?: unknown[] } }[] }).nftables.find(
        (x) => x.map,
      )?.map?.elem?.length;
      return `${n ?? 0} service-ips elements`;
    },
  );
  // kube-proxy twice: with iptables-nft (Debian's iptables, what most current nodes run)
  // and with iptables-legacy (the kernel's x_tables), each through its own iptables in PATH.
  const kubeProxyRun = (variant: 'nft' | 'legacy') =>
    measure(
      (ns) =>
        new Proc(
          execa(
            'ip',
            [
              'netns',
              'exec',
              ns.name,
              join(KUBE_BIN, 'kube-proxy'),
              `--kubeconfig=${api.kubeconfigPath}`,
              '--proxy-mode=iptables',
              '--hostname-override=node-0',
              '--cluster-cidr=10.128.0.0/9',
              '--feature-gates=EndpointSliceProxying=false',
              '--conntrack-max-per-core=0',
              '--conntrack-tcp-timeout-established=0s',
              '--conntrack-tcp-timeout-close-wait=0s',
              '--oom-score-adj=0',
              '--metrics-bind-address=127.0.0.1:10249',
              '--healthz-bind-address=127.0.0.1:10256',
              '--v=2',
            ],
            {
              reject: false,
              buffer: false,
              stdout: 'pipe',
              stderr: 'pipe',
              env: { PATH: `${iptablesDir(variant)}:${process.env.PATH ?? ''}` },
            },
          ),
        ),
      KUBE_PROXY_SYNCED,
      (m) => goDurationMs(m[1]!),
      async (ns) => {
        const { stdout } = await ns.run(`iptables-${variant}-save`, '-t', 'nat');
        const svc = stdout.split('\n').filter((l) => l.startsWith('-A KUBE-SERVICES ')).length;
        const lines = stdout.split('\n').filter((l) => l.startsWith('-A ')).length;
        return `${svc} KUBE-SERVICES rules, ${lines} nat rules`;
      },
    );
  const kubeProxy = await kubeProxyRun('nft');
  const kubeProxyLegacy = await kubeProxyRun('legacy');
  // The next size starts from an empty API.
  await pool(names, 16, async (name) => {
    const meta = { name, namespace: 'default' };
    await api.delete({ apiVersion: 'v1', kind: 'Service', metadata: meta });
    await api.delete({ apiVersion: 'v1', kind: 'Endpoints', metadata: meta });
  });
  await pool(slices, 16, (s) => api.delete(s as never));
  return { services, endpoints, createMs, nftproxy, kubeProxy, kubeProxyLegacy };
}

/**
 * Runs every size against one real API server. A proxy whose first sync has not ended after
 * `firstSyncLimitMs` is given up on at that size (reported as such).
 */
export async function benchRealPeer(
  sizes: number[],
  changes: number,
  command: string,
  firstSyncLimitMs = 900_000,
): Promise<PeerResults> {
  const missing = realApiServerMissing();
  if (missing) throw new Error(missing);
  const api = await RealApiServer.start({ serviceCIDR: '10.96.0.0/12' });
  try {
    const node = await api.apply({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'node-0' } } as never);
    // The kubelet's part: the node's address, through the status subresource.
    await api.request('PUT', '/api/v1/nodes/node-0/status', {
      ...(node as object),
      status: { addresses: [{ type: 'InternalIP', address: '192.168.50.1' }] },
    });
    const version = await execa(join(KUBE_BIN, 'kube-proxy'), ['--version'], { reject: false });
    const runs: PeerRun[] = [];
    for (const [i, n] of sizes.entries())
      runs.push(await runSize(api, n, changes, i * 1000, firstSyncLimitMs));
    return {
      benchmark: 'real-peer',
      command,
      machine: await machine(),
      kubeProxyVersion: version.stdout.trim(),
      changes,
      runs,
    };
  } finally {
    await api.stop();
  }
}

export function realPeerMarkdown(r: PeerResults): string {
  const ratio = (a: number, b: number) => (b > 0 && a > 0 ? `${(a / b).toFixed(a / b < 10 ? 1 : 0)}x` : '-');
  const who = [
    ['nftproxy', (x: PeerRun) => x.nftproxy],
    ['kube-proxy, iptables-nft', (x: PeerRun) => x.kubeProxy],
    ['kube-proxy, iptables-legacy', (x: PeerRun) => x.kubeProxyLegacy],
  ] as const;
  const table = (
    title: string,
    pick: (p: ProxyFigures) => number,
    unfinished: (p: ProxyFigures) => number | undefined = (p) => p.unfinishedAfterMs,
  ) => [
    `| ${title} | ${who.map(([n]) => n).join(' | ')} | ${who
      .slice(1)
      .map(([n]) => `${n} / nftproxy`)
      .join(' | ')} |`,
    `| ---: | ${who.map(() => '---:').join(' | ')} | ${who
      .slice(1)
      .map(() => '---:')
      .join(' | ')} |`,
    ...r.runs.map((x) => {
      const v = who.map(([, get]) => pick(get(x)));
      const cell = (ms: number, i: number) => {
        const u = unfinished(who[i]![1](x));
        return u !== undefined ? `> ${f(u)}` : Number.isFinite(ms) ? f(ms) : '-';
      };
      return `| ${x.services} | ${v.map(cell).join(' | ')} | ${v
        .slice(1)
        .map((ms) => ratio(ms, v[0]!))
        .join(' | ')} |`;
    }),
  ];
  return [
    `### nftproxy beside real kube-proxy (${r.kubeProxyVersion}, iptables mode), one real API server`,
    '',
    `\`${r.command}\` on ${r.machine.cpus} CPUs, kernel ${r.machine.kernel}, Node ${r.machine.node}, ${r.machine.date}. ` +
      `Each proxy's own log: nftproxy's \`synced\` durationMs, kube-proxy's \`syncProxyRules took\`. ` +
      `Services created through the API: ${r.runs.map((x) => `${x.services} in ${f(x.createMs)}`).join(', ')} ` +
      `(each with an EndpointSlice and an Endpoints object).`,
    '',
    'First full sync:',
    '',
    ...table('services', (p) => p.firstSyncMs),
    '',
    'Ready: from the process start to the end of the first sync (connecting, listing the API, the sync):',
    '',
    ...table('services', (p) => p.readyMs),
    '',
    `Sync after one endpoint change (one pod replaced in one Service; median of the syncs that followed ${r.changes} changes):`,
    '',
    ...table(
      'services',
      (p) => median(p.changeSyncMs),
      (p) => p.unfinishedAfterMs ?? (p.changeSyncMs.length ? undefined : p.unfinishedChangeAfterMs),
    ),
    '',
    ...r.runs.map(
      (x) =>
        `- ${x.services}: nftproxy wrote ${x.nftproxy.programmed}; kube-proxy wrote ${x.kubeProxy.programmed} (iptables-nft), ${x.kubeProxyLegacy.programmed} (legacy).`,
    ),
  ].join('\n');
}

export async function writeRealPeer(dir: string, r: PeerResults): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'real-peer.json'), JSON.stringify(r, null, 2) + '\n');
  await writeFile(join(dir, 'real-peer.md'), realPeerMarkdown(r) + '\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    options: {
      services: { type: 'string', default: '1000,10000' },
      changes: { type: 'string', default: '3' },
      limit: { type: 'string', default: '300' },
    },
  });
  const sizes = values.services.split(',').map(Number);
  const command = `node dist-bench/bench/real-peer.js --services ${values.services} --changes ${values.changes} --limit ${values.limit}`;
  const r = await benchRealPeer(sizes, Number(values.changes), command, Number(values.limit) * 1000);
  await writeRealPeer(repoPath('bench', 'results'), r);
  process.stdout.write(realPeerMarkdown(r) + '\n');
}
