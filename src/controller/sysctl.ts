/**
 * The conntrack sysctls kube-proxy sets at start (its `conntrack` settings), each only when
 * asked for: the table size from a per-core figure with a floor, and the TCP and UDP timeouts
 * that decide how long an idle service connection keeps its NAT. Written in the namespace the
 * rules are in (the node's, or `--netns`), nowhere else.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { execa } from 'execa';
import { silentLogger, type Logger } from '../telemetry/log.js';

/** What to set; absent: leave the kernel's value. Timeouts in seconds. */
export interface ConntrackSettings {
  /** nf_conntrack_max = max(maxPerCore x CPUs, min); raised, never lowered. 0: leave it. */
  maxPerCore?: number;
  min?: number;
  tcpEstablishedTimeoutSeconds?: number;
  tcpCloseWaitTimeoutSeconds?: number;
  /** Accept TCP packets outside the window (nf_conntrack_tcp_be_liberal). */
  tcpBeLiberal?: boolean;
  udpTimeoutSeconds?: number;
  udpStreamTimeoutSeconds?: number;
}

/** Reads and writes `net.netfilter.*` keys somewhere. */
export interface SysctlAccess {
  read(key: string): Promise<string>;
  write(key: string, value: string): Promise<void>;
}

/** /proc/sys of this process's namespace, or of a named one through `ip netns exec`. */
export function sysctlAccess(netns?: string): SysctlAccess {
  const path = (key: string) => `/proc/sys/${key.replaceAll('.', '/')}`;
  if (!netns)
    return {
      read: async (key) => (await readFile(path(key), 'utf8')).trim(),
      write: (key, value) => writeFile(path(key), value),
    };
  return {
    read: async (key) => (await execa('ip', ['netns', 'exec', netns, 'cat', path(key)])).stdout.trim(),
    // Not `sysctl -w`: procps exits 0 when the kernel refuses the value.
    write: async (key, value) => {
      await execa('ip', [
        'netns',
        'exec',
        netns,
        'sh',
        '-c',
        'printf %s "$1" > "$2"',
        'sh',
        value,
        path(key),
      ]);
    },
  };
}

/** One sysctl changed. */
export interface SysctlChange {
  key: string;
  from: string;
  to: string;
}

const KEY = {
  max: 'net.netfilter.nf_conntrack_max',
  tcpEstablished: 'net.netfilter.nf_conntrack_tcp_timeout_established',
  tcpCloseWait: 'net.netfilter.nf_conntrack_tcp_timeout_close_wait',
  tcpBeLiberal: 'net.netfilter.nf_conntrack_tcp_be_liberal',
  udp: 'net.netfilter.nf_conntrack_udp_timeout',
  udpStream: 'net.netfilter.nf_conntrack_udp_timeout_stream',
} as const;

/**
 * Sets what `settings` asks for and returns what changed. A key that cannot be written is
 * logged and skipped (nf_conntrack_max is global to the kernel and read-only inside a network
 * namespace other than the first); it never stops the proxy.
 */
export async function applyConntrackSettings(
  settings: ConntrackSettings,
  access: SysctlAccess,
  cpus: number,
  log: Logger = silentLogger,
): Promise<SysctlChange[]> {
  const wanted: [string, string, 'raise' | 'set'][] = [];
  if (settings.maxPerCore) {
    const max = Math.max(settings.maxPerCore * cpus, settings.min ?? 0);
    wanted.push([KEY.max, String(max), 'raise']);
  }
  const seconds = (key: string, v: number | undefined) => {
    if (v !== undefined && v > 0) wanted.push([key, String(Math.round(v)), 'set']);
  };
  seconds(KEY.tcpEstablished, settings.tcpEstablishedTimeoutSeconds);
  seconds(KEY.tcpCloseWait, settings.tcpCloseWaitTimeoutSeconds);
  seconds(KEY.udp, settings.udpTimeoutSeconds);
  seconds(KEY.udpStream, settings.udpStreamTimeoutSeconds);
  if (settings.tcpBeLiberal !== undefined)
    wanted.push([KEY.tcpBeLiberal, settings.tcpBeLiberal ? '1' : '0', 'set']);

  const changes: SysctlChange[] = [];
  for (const [key, to, how] of wanted) {
    try {
      const from = await access.read(key);
      if (from === to || (how === 'raise' && Number(from) >= Number(to))) continue;
      await access.write(key, to);
      const now = await access.read(key);
      if (now !== to) throw new Error(`the kernel kept ${now}`);
      changes.push({ key, from, to });
    } catch (e) {
      const why = e instanceof Error ? e.message.split('\n').at(-1)! : String(e);
      log.warn(
        key === KEY.max
          ? 'cannot raise nf_conntrack_max (global to the kernel: only from the first network namespace)'
          : 'cannot set a conntrack sysctl',
        { key, value: to, error: why },
      );
    }
  }
  for (const c of changes) log.info('set conntrack sysctl', { ...c });
  return changes;
}
