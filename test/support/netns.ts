/**
 * Throwaway network namespaces for kernel tests. Nothing here touches the root namespace:
 * links are created inside a test namespace (veth peers go straight into another test
 * namespace) and sysctls are set inside them. Every namespace is deleted in `destroy`, and
 * at process exit if a test run was cut short.
 */
import { needs } from './require.js';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';

const live = new Set<string>();
process.on('exit', () => {
  for (const ns of live) {
    try {
      execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    } catch {
      // already gone
    }
  }
});

/** Whether this process may create namespaces and run nft (root, with iproute2 and nft). */
/**
 * Skips the test (or suite) when kernel tests cannot run here; under CI, which must run them,
 * fails instead, so a machine without the tools never turns the kernel tests green by skipping.
 */
export function requireKernel(ctx: Mocha.Context): void {
  needs(ctx, kernelTestsPossible());
}

export function kernelTestsPossible(): string | undefined {
  if (process.getuid?.() !== 0) return 'kernel tests need root (they create network namespaces)';
  for (const tool of ['ip', 'nft']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      return `kernel tests need ${tool}; run .ci/run, which installs it`;
    }
  }
  return undefined;
}

/** One network namespace. */
export class Netns {
  private constructor(readonly name: string) {}

  /** Creates `nftp-ROLE-RANDOM`, with loopback up. */
  static async create(role: string): Promise<Netns> {
    const name = `nftp-${role}-${randomBytes(3).toString('hex')}`;
    await execa('ip', ['netns', 'add', name]);
    live.add(name);
    const ns = new Netns(name);
    await ns.run('ip', 'link', 'set', 'lo', 'up');
    return ns;
  }

  /** Runs a command inside the namespace. */
  run(file: string, ...args: string[]) {
    return execa('ip', ['netns', 'exec', this.name, file, ...args]);
  }

  /** Runs a shell script inside the namespace (one process for many `ip` calls). */
  sh(script: string) {
    return execa('ip', ['netns', 'exec', this.name, 'sh', '-ec', script]);
  }

  /** Starts a long-running command inside the namespace. */
  spawn(file: string, args: string[]) {
    return execa('ip', ['netns', 'exec', this.name, file, ...args], { reject: false, buffer: false });
  }

  /** The command prefix that runs nft here, for ExecBackend. */
  get nftCommand(): string[] {
    return ['ip', 'netns', 'exec', this.name, 'nft'];
  }

  async delete(): Promise<void> {
    await execa('ip', ['netns', 'del', this.name], { reject: false });
    live.delete(this.name);
  }
}

/** A pod: its namespace and addresses. */
export interface Pod {
  name: string;
  ns: Netns;
  ip: string;
  ip6: string;
}

/**
 * A node with pods and an outside world:
 *
 *   external (192.168.50.2, fd00:50::2) --- node (192.168.50.1, fd00:50::1)
 *   node --- client, pod-a, pod-b, ... : one veth each, routed /32 (and /128) per pod,
 *   the node side holding the pods' gateway 10.244.1.1 / fd00:244::1 on every veth.
 *
 * Pod-to-pod traffic always crosses the node's IP layer, as with Calico or Cilium, so the
 * node's nftables sees every service connection. The node's default route points at the
 * external host, as a real node's points at its gateway: without one, a ClusterIP is
 * unroutable and the kernel answers "network unreachable" before the forward hook runs.
 */
export interface Topology {
  node: Netns;
  external: Netns;
  client: Pod;
  pods: Pod[];
  nodeIP: string;
  nodeIP6: string;
  externalIP: string;
  externalIP6: string;
  gateway: string;
  gateway6: string;
  destroy(): Promise<void>;
}

/** Builds a topology with `podCount` backend pods (pod-a, pod-b, ...). */
export async function createTopology(podCount: number): Promise<Topology> {
  const created: Netns[] = [];
  const make = async (role: string) => {
    const ns = await Netns.create(role);
    created.push(ns);
    return ns;
  };
  const destroy = async () => {
    await Promise.all(created.map((ns) => ns.delete()));
  };
  try {
    const node = await make('node');
    const external = await make('ext');
    await node.sh(`
      sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
      sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
      ip link add ext0 type veth peer name eth0 netns ${external.name}
      ip addr add 192.168.50.1/24 dev ext0
      ip -6 addr add fd00:50::1/64 dev ext0 nodad
      ip link set ext0 up
      ip route add default via 192.168.50.2
      ip -6 route add default via fd00:50::2
    `);
    await external.sh(`
      ip addr add 192.168.50.2/24 dev eth0
      ip -6 addr add fd00:50::2/64 dev eth0 nodad
      ip link set eth0 up
      ip route add default via 192.168.50.1
      ip -6 route add default via fd00:50::1
    `);
    const addPod = async (name: string, index: number): Promise<Pod> => {
      const ns = await make(name);
      const ip = `10.244.1.${index}`;
      const ip6 = `fd00:244::${index.toString(16)}`;
      const dev = `p${index}`;
      await node.sh(`
        ip link add ${dev} type veth peer name eth0 netns ${ns.name}
        ip addr add 10.244.1.1/32 dev ${dev}
        ip -6 addr add fd00:244::1/128 dev ${dev} nodad
        ip link set ${dev} up
        ip route add ${ip}/32 dev ${dev}
        ip -6 route add ${ip6}/128 dev ${dev}
      `);
      await ns.sh(`
        ip addr add ${ip}/32 dev eth0
        ip -6 addr add ${ip6}/128 dev eth0 nodad
        ip link set eth0 up
        ip route add 10.244.1.1 dev eth0
        ip route add default via 10.244.1.1 dev eth0
        ip -6 route add fd00:244::1 dev eth0
        ip -6 route add default via fd00:244::1 dev eth0
      `);
      return { name, ns, ip, ip6 };
    };
    const client = await addPod('client', 100);
    const pods: Pod[] = [];
    for (let i = 0; i < podCount; i++) pods.push(await addPod(`pod-${String.fromCharCode(97 + i)}`, 10 + i));
    return {
      node,
      external,
      client,
      pods,
      nodeIP: '192.168.50.1',
      nodeIP6: 'fd00:50::1',
      externalIP: '192.168.50.2',
      externalIP6: 'fd00:50::2',
      gateway: '10.244.1.1',
      gateway6: 'fd00:244::1',
      destroy,
    };
  } catch (e) {
    await destroy();
    throw e;
  }
}

const SUPPORT = fileURLToPath(new URL('.', import.meta.url));
/** The helper scripts beside this file: compiled (benchmarks run from dist-bench/) or run through tsx. */
const EXT = import.meta.url.endsWith('.ts') ? 'ts' : 'js';
const SCRIPT_FLAGS = EXT === 'ts' ? ['--import', 'tsx'] : [];

/** Echo servers in a pod: each answers `NAME SOURCE-ADDRESS`. Resolves when listening. */
export async function startEchoServer(
  pod: Pod,
  ports: { tcp?: number[]; udp?: number[] },
): Promise<() => Promise<void>> {
  const args = [...SCRIPT_FLAGS, `${SUPPORT}echo-server.${EXT}`, '--name', pod.name];
  for (const p of ports.tcp ?? []) args.push('--tcp', String(p));
  for (const p of ports.udp ?? []) args.push('--udp', String(p));
  const child = pod.ns.spawn('node', args);
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready')) resolve();
    });
    void child.then((r) => reject(new Error(`echo server in ${pod.name} exited: ${String(r.stderr ?? '')}`)));
  });
  return async () => {
    child.kill();
    await child;
  };
}

/**
 * Makes 127.0.0.1:`port` inside `ns` lead to the Unix socket `socket` (forward.ts). Resolves
 * when listening; the function it returns stops it.
 */
export async function startForwarder(ns: Netns, port: number, socket: string): Promise<() => Promise<void>> {
  const child = ns.spawn('node', [
    ...SCRIPT_FLAGS,
    `${SUPPORT}forward.${EXT}`,
    '--port',
    String(port),
    '--socket',
    socket,
  ]);
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready')) resolve();
    });
    void child.then((r) => reject(new Error(`forwarder in ${ns.name} exited: ${String(r.stderr ?? '')}`)));
  });
  return async () => {
    child.kill();
    await child;
  };
}

/** One connection attempt, as the probe reports it. */
export interface ProbeResult {
  ok: boolean;
  /** The pod that answered. */
  server?: string;
  /** The source address the pod saw. */
  seenFrom?: string;
  /** ECONNREFUSED, ECONNRESET, ETIMEDOUT, ... */
  error?: string;
  ms: number;
}

type Target = { host: string; port: number; protocol?: 'tcp' | 'udp' };

/** Runs test/support/probe.ts in a namespace with these extra flags. */
async function runProbe(from: Netns, to: Target, flags: string[]): Promise<ProbeResult[]> {
  const base = [...SCRIPT_FLAGS, `${SUPPORT}probe.${EXT}`, '--host', to.host, '--port', String(to.port)];
  const r = await from.run('node', ...base, '--protocol', to.protocol ?? 'tcp', ...flags);
  return JSON.parse(r.stdout) as ProbeResult[];
}

/** Makes `count` new connections from a namespace to `host:port` and reports each. */
export function probe(
  from: Netns,
  to: Target,
  count: number,
  timeoutMs = 2000,
  sources: string[] = [],
): Promise<ProbeResult[]> {
  const flags = ['--count', String(count), '--timeout', String(timeoutMs)];
  for (const s of sources) flags.push('--source', s);
  return runProbe(from, to, flags);
}

/**
 * Runs a probe for `durationMs` (new connections every `intervalMs`, or with `steady` one
 * UDP flow) and resolves with its results.
 */
export function probeFor(
  from: Netns,
  to: Target,
  opts: { durationMs: number; intervalMs?: number; steady?: boolean; timeoutMs?: number },
): Promise<ProbeResult[]> {
  const flags = ['--duration', String(opts.durationMs), '--interval', String(opts.intervalMs ?? 20)];
  flags.push('--timeout', String(opts.timeoutMs ?? 1000), ...(opts.steady ? ['--steady'] : []));
  return runProbe(from, to, flags);
}

/** Counts answers per server. */
export function tally(results: ProbeResult[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of results) {
    const k = r.ok ? r.server! : `error:${r.error}`;
    out[k] = (out[k] ?? 0) + 1;
  }
  return out;
}
