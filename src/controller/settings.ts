/**
 * Settings of `nftproxy run`: flags, an optional YAML config file, and defaults, in that
 * order of precedence. Every unknown or invalid setting is an error at start, listed all
 * at once with where it came from.
 */
import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { ConfigError, parseProxyConfig, type ProxyConfig } from '../proxy/config.js';
import { LogLevel } from '../telemetry/log.js';
import type { ConntrackSettings } from './sysctl.js';
import { fromKubeProxyConfiguration, isKubeProxyConfiguration } from './kube-proxy-config.js';

/** Settings as given: every field optional, values as text where the user writes text. */
export interface SettingsInput {
  nodeName?: string;
  clusterCIDRs?: string[];
  /** ClusterIP ranges (--service-cluster-ip-range of the API server), per family. */
  serviceCIDRs?: string[];
  nodePortAddresses?: string[];
  nodeIPs?: string[];
  masqueradeAll?: boolean;
  /** The service.kubernetes.io/service-proxy-name value this proxy takes ('' or absent: unlabelled services). */
  serviceProxyName?: string;
  /** ClusterCIDR (default), NodeCIDR, BridgeInterface or InterfaceNamePrefix: how traffic from pods is told apart. */
  detectLocalMode?: string;
  podBridgeInterface?: string;
  podInterfaceNamePrefix?: string;
  /** Entries of the ClientIP affinity map per family. */
  affinityMapSize?: number;
  /** Counters on backends map elements (see ProxyConfigInput.endpointCounters). */
  endpointCounters?: boolean;
  /** Export the endpoint counters on /metrics, at most this many series (0: not exported). */
  endpointMetrics?: number;
  /** Manifest directory: the source when no API server is used. */
  manifests?: string;
  /** Kubeconfig file for the API source; without it (and without manifests), in-cluster config. */
  kubeconfig?: string;
  /** Program this network namespace instead of the current one (tests and demos). */
  netns?: string;
  /** How to write to the kernel: `netlink` (nf_tables netlink, the default) or `nft` (the nft binary). */
  backend?: string;
  /** How often to check that our tables are intact (also the health period). */
  syncPeriod?: string;
  /** How often to recompile everything and reconcile against the kernel (0: never). */
  fullSyncPeriod?: string;
  /** Minimum time between two syncs: bursts of changes coalesce within it. */
  minSyncInterval?: string;
  /** Longest wait before a failed list or watch of the API server is retried. */
  apiBackoffMax?: string;
  /** While a watch waits after a failure, ask the API server this often whether it is back (0: never). */
  apiProbeInterval?: string;
  /** `host:port` of /healthz and /livez; empty to disable. */
  healthzBindAddress?: string;
  /** `host:port` of /metrics; empty to disable. */
  metricsBindAddress?: string;
  logLevel?: string;
  /** nf_conntrack_max from CPUs x this (at least conntrackMin); raised, never lowered. */
  conntrackMaxPerCore?: number;
  conntrackMin?: number;
  /** Conntrack timeouts (durations); absent: the kernel's. */
  conntrackTCPEstablishedTimeout?: string;
  conntrackTCPCloseWaitTimeout?: string;
  conntrackTCPBeLiberal?: boolean;
  conntrackUDPTimeout?: string;
  conntrackUDPStreamTimeout?: string;
}

/** Validated settings. */
export interface Settings {
  proxy: ProxyConfig;
  manifests?: string;
  kubeconfig?: string;
  netns?: string;
  backend: Backend;
  syncPeriodMs: number;
  fullSyncPeriodMs: number;
  minSyncIntervalMs: number;
  apiBackoffMaxMs: number;
  apiProbeIntervalMs: number;
  healthzBindAddress: string;
  metricsBindAddress: string;
  logLevel: LogLevel;
  /** Conntrack sysctls to set at start (none by default). */
  conntrack: ConntrackSettings;
  /** Endpoint counter series on /metrics at most (0: none). */
  endpointMetrics: number;
}

/** How nftproxy writes to the kernel. */
export const Backends = ['netlink', 'nft'] as const;
export type Backend = (typeof Backends)[number];

/** Defaults: kube-proxy's where they exist. */
export const DEFAULTS = {
  backend: 'netlink',
  syncPeriod: '30s',
  fullSyncPeriod: '1h',
  minSyncInterval: '100ms',
  apiBackoffMax: '30s',
  apiProbeInterval: '1s',
  healthzBindAddress: '0.0.0.0:10256',
  metricsBindAddress: '127.0.0.1:10249',
  logLevel: 'info',
} as const;

const KEYS: Record<keyof SettingsInput, 'string' | 'strings' | 'boolean' | 'number'> = {
  nodeName: 'string',
  clusterCIDRs: 'strings',
  serviceCIDRs: 'strings',
  nodePortAddresses: 'strings',
  nodeIPs: 'strings',
  masqueradeAll: 'boolean',
  serviceProxyName: 'string',
  detectLocalMode: 'string',
  podBridgeInterface: 'string',
  podInterfaceNamePrefix: 'string',
  affinityMapSize: 'number',
  endpointCounters: 'boolean',
  endpointMetrics: 'number',
  manifests: 'string',
  kubeconfig: 'string',
  netns: 'string',
  backend: 'string',
  syncPeriod: 'string',
  fullSyncPeriod: 'string',
  minSyncInterval: 'string',
  apiBackoffMax: 'string',
  apiProbeInterval: 'string',
  healthzBindAddress: 'string',
  metricsBindAddress: 'string',
  logLevel: 'string',
  conntrackMaxPerCore: 'number',
  conntrackMin: 'number',
  conntrackTCPEstablishedTimeout: 'string',
  conntrackTCPCloseWaitTimeout: 'string',
  conntrackTCPBeLiberal: 'boolean',
  conntrackUDPTimeout: 'string',
  conntrackUDPStreamTimeout: 'string',
};

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** `1h30m`, `30s`, `100ms` -> milliseconds; undefined if not a duration. */
export function parseDuration(text: string): number | undefined {
  if (!/^(\d+(\.\d+)?(ms|s|m|h))+$/.test(text)) return undefined;
  let total = 0;
  for (const m of text.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) total += Number(m[1]) * UNITS[m[2]!]!;
  return total;
}

/** Reads a YAML config file into settings input, checking keys and types. */
export async function readSettingsFile(path: string): Promise<SettingsInput> {
  return (await loadSettingsFile(path)).settings;
}

/**
 * Reads a config file: nftproxy's settings, or kube-proxy's KubeProxyConfiguration (mapped;
 * `ignored` lists what it sets that nftproxy does not use, for the log).
 */
export async function loadSettingsFile(
  path: string,
): Promise<{ settings: SettingsInput; ignored: string[] }> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new ConfigError([`config file ${path}: ${(e as Error).message}`]);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (e) {
    throw new ConfigError([`config file ${path}: not valid YAML: ${(e as Error).message.split('\n')[0]}`]);
  }
  if (doc === null || doc === undefined) return { settings: {}, ignored: [] };
  if (isKubeProxyConfiguration(doc)) {
    const { settings, ignored } = fromKubeProxyConfiguration(doc);
    return { settings, ignored: ignored.map((i) => `${path}: ${i}`) };
  }
  if (typeof doc !== 'object' || Array.isArray(doc))
    throw new ConfigError([`config file ${path}: must be a mapping of settings`]);
  const problems: string[] = [];
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(doc)) {
    const type = Object.hasOwn(KEYS, k) ? KEYS[k as keyof SettingsInput] : undefined;
    if (!type) {
      problems.push(
        `config file ${path}: unknown setting ${JSON.stringify(k)} (known: ${Object.keys(KEYS).join(', ')})`,
      );
    } else if (
      type === 'strings' ? !Array.isArray(v) || v.some((x) => typeof x !== 'string') : typeof v !== type
    ) {
      problems.push(
        `config file ${path}: ${k} must be ${type === 'strings' ? 'a list of strings' : `a ${type}`}, got ${JSON.stringify(v)}`,
      );
    } else {
      out[k] = v;
    }
  }
  if (problems.length) throw new ConfigError(problems);
  return { settings: out as SettingsInput, ignored: [] };
}

function bindAddress(text: string, what: string, problems: string[]): string {
  if (text === '') return text;
  const m = /^(.*):(\d+)$/.exec(text);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port < 0 || port > 65535)
    problems.push(`${what}: want host:port (or empty to disable), got ${JSON.stringify(text)}`);
  return text;
}

/** Merges flags over file over environment and defaults, and validates. */
export function resolveSettings(
  flags: SettingsInput,
  file: SettingsInput = {},
  env: NodeJS.ProcessEnv = process.env,
): Settings {
  const pick = <K extends keyof SettingsInput>(k: K): SettingsInput[K] => flags[k] ?? file[k];
  const problems: string[] = [];
  // Timers take at most 2^31-1 ms (about 24.8 days); longer ones fire at once, every time.
  const LIMITS = {
    syncPeriod: [100, 2 ** 31 - 1],
    fullSyncPeriod: [0, 2 ** 31 - 1],
    minSyncInterval: [0, 60_000],
    // The first retry comes after 1 s: a cap below it would be no backoff.
    apiBackoffMax: [1000, 2 ** 31 - 1],
    apiProbeInterval: [0, 2 ** 31 - 1],
  } as const;
  const duration = (k: keyof typeof LIMITS) => {
    const text = pick(k) ?? DEFAULTS[k];
    const ms = parseDuration(text);
    const [min, max] = LIMITS[k];
    if (ms === undefined)
      problems.push(`${k}: not a duration (like 30s, 1h, 100ms): ${JSON.stringify(text)}`);
    else if (ms < min || ms > max) problems.push(`${k}: ${text} is outside ${min} ms .. ${max} ms`);
    return ms ?? 0;
  };
  const syncPeriodMs = duration('syncPeriod');
  const fullSyncPeriodMs = duration('fullSyncPeriod');
  const minSyncIntervalMs = duration('minSyncInterval');
  const apiBackoffMaxMs = duration('apiBackoffMax');
  const apiProbeIntervalMs = duration('apiProbeInterval');
  const conntrack: ConntrackSettings = {};
  for (const [key, field] of [
    ['conntrackMaxPerCore', 'maxPerCore'],
    ['conntrackMin', 'min'],
  ] as const) {
    const v = pick(key);
    if (v === undefined) continue;
    if (!Number.isInteger(v) || v < 0 || v > 2 ** 31 - 1)
      problems.push(`${key}: want a whole number from 0, got ${JSON.stringify(v)}`);
    else conntrack[field] = v;
  }
  for (const [key, field] of [
    ['conntrackTCPEstablishedTimeout', 'tcpEstablishedTimeoutSeconds'],
    ['conntrackTCPCloseWaitTimeout', 'tcpCloseWaitTimeoutSeconds'],
    ['conntrackUDPTimeout', 'udpTimeoutSeconds'],
    ['conntrackUDPStreamTimeout', 'udpStreamTimeoutSeconds'],
  ] as const) {
    const text = pick(key);
    if (text === undefined) continue;
    const ms = parseDuration(text);
    if (ms === undefined || ms % 1000 !== 0)
      problems.push(
        `${key}: want a duration in whole seconds (like 24h, 1h, 30s), got ${JSON.stringify(text)}`,
      );
    else conntrack[field] = ms / 1000;
  }
  const endpointMetrics = pick('endpointMetrics') ?? 0;
  if (!Number.isInteger(endpointMetrics) || endpointMetrics < 0 || endpointMetrics > 1_000_000)
    problems.push(
      `endpointMetrics: want a whole number of series from 0 to 1000000, got ${JSON.stringify(endpointMetrics)}`,
    );
  if (pick('conntrackTCPBeLiberal') !== undefined) conntrack.tcpBeLiberal = pick('conntrackTCPBeLiberal')!;
  const logLevel = pick('logLevel') ?? DEFAULTS.logLevel;
  if (!Object.hasOwn(LogLevel, logLevel))
    problems.push(
      `logLevel: want one of ${Object.keys(LogLevel).join(', ')}, got ${JSON.stringify(logLevel)}`,
    );
  const backend = pick('backend') ?? DEFAULTS.backend;
  if (!(Backends as readonly string[]).includes(backend))
    problems.push(`backend: want one of ${Backends.join(', ')}, got ${JSON.stringify(backend)}`);
  const manifests = pick('manifests');
  const kubeconfig = pick('kubeconfig');
  if (manifests && kubeconfig) problems.push('manifests and kubeconfig: choose one source');
  let proxy: ProxyConfig | undefined;
  try {
    proxy = parseProxyConfig({
      nodeName: pick('nodeName') ?? env.NODE_NAME ?? '',
      clusterCIDRs: pick('clusterCIDRs') ?? [],
      serviceCIDRs: pick('serviceCIDRs') ?? [],
      nodePortAddresses: pick('nodePortAddresses') ?? [],
      nodeIPs: pick('nodeIPs') ?? [],
      masqueradeAll: pick('masqueradeAll') ?? false,
      serviceProxyName: pick('serviceProxyName') ?? '',
      detectLocalMode: pick('detectLocalMode') ?? '',
      ...(pick('podBridgeInterface') !== undefined
        ? { podBridgeInterface: pick('podBridgeInterface')! }
        : {}),
      ...(pick('podInterfaceNamePrefix') !== undefined
        ? { podInterfaceNamePrefix: pick('podInterfaceNamePrefix')! }
        : {}),
      ...(pick('affinityMapSize') !== undefined
        ? { affinityMapSize: pick('affinityMapSize') as number }
        : {}),
      ...(pick('endpointCounters') !== undefined
        ? { endpointCounters: pick('endpointCounters') as boolean }
        : {}),
    });
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    problems.push(...e.problems);
  }
  const settings: Settings = {
    proxy: proxy!,
    ...(manifests ? { manifests } : {}),
    ...(kubeconfig ? { kubeconfig } : {}),
    ...(pick('netns') ? { netns: pick('netns')! } : {}),
    backend: backend as Backend,
    syncPeriodMs,
    fullSyncPeriodMs,
    minSyncIntervalMs,
    apiBackoffMaxMs,
    apiProbeIntervalMs,
    healthzBindAddress: bindAddress(
      pick('healthzBindAddress') ?? DEFAULTS.healthzBindAddress,
      'healthzBindAddress',
      problems,
    ),
    metricsBindAddress: bindAddress(
      pick('metricsBindAddress') ?? DEFAULTS.metricsBindAddress,
      'metricsBindAddress',
      problems,
    ),
    logLevel: logLevel as LogLevel,
    conntrack,
    endpointMetrics,
  };
  if (problems.length) throw new ConfigError(problems);
  return settings;
}
