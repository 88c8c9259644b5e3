/**
 * What the CLI commands share: reading the cluster from manifests and the node settings
 * from flags, and printing diagnostics.
 */
import { stat } from 'node:fs/promises';
import type { Command } from 'commander';
import { loadManifestDir } from '../k8s/manifests.js';
import { type ClusterState, type Diagnostic, formatDiagnostic } from '../k8s/types.js';
import { parseProxyConfig, type ProxyConfig } from '../proxy/config.js';

/** Flags that describe the node, shared by `render` and `explain`. */
export interface NodeFlags {
  manifests: string;
  node?: string;
  clusterCidr?: string[];
  serviceCidr?: string[];
  detectLocalMode?: string;
  podBridgeInterface?: string;
  podInterfaceNamePrefix?: string;
  nodeportAddresses?: string[];
  nodeIp?: string[];
  masqueradeAll?: boolean;
}

/** A repeatable flag that also takes comma-separated values: `--x a --x b,c` -> [a, b, c]. */
export const collect = (value: string, previous: string[] = []): string[] => [
  ...previous,
  ...value.split(',').filter(Boolean),
];

/** Adds the manifest and node flags to a command; `--manifests` is required unless told. */
export function nodeOptions(
  cmd: Command,
  opts: { manifests: 'required' | 'optional' } = { manifests: 'required' },
): Command {
  const manifests = [
    '--manifests <dir>',
    'directory of Service, EndpointSlice and Node manifests (YAML or JSON)',
  ] as const;
  return (opts.manifests === 'required' ? cmd.requiredOption(...manifests) : cmd.option(...manifests))
    .option('--node <name>', "this node's name (default: $NODE_NAME)")
    .option(
      '--cluster-cidr <cidr>',
      'pod network CIDR, repeatable; off-cluster traffic to ClusterIPs is masqueraded',
      collect,
    )
    .option(
      '--service-cidr <cidr>',
      'ClusterIP range, repeatable; traffic to an unallocated ClusterIP is dropped',
      collect,
    )
    .option(
      '--nodeport-addresses <cidr|primary>',
      'answer NodePorts only on local addresses in these CIDRs, repeatable',
      collect,
    )
    .option(
      '--detect-local-mode <mode>',
      'ClusterCIDR (default), NodeCIDR, BridgeInterface or InterfaceNamePrefix',
    )
    .option('--pod-bridge-interface <name>', 'the pods bridge, with --detect-local-mode BridgeInterface')
    .option(
      '--pod-interface-name-prefix <prefix>',
      'the pod interfaces, with --detect-local-mode InterfaceNamePrefix',
    )
    .option('--node-ip <ip>', "this node's IP, repeatable (default: from its Node object)", collect)
    .option('--masquerade-all', 'masquerade all traffic to ClusterIPs');
}

/** Command prefix that runs `tool` in a network namespace, or here when none is named. */
export function inNetns(where: { netns?: string }, tool: string): string[] {
  return where.netns ? ['ip', 'netns', 'exec', where.netns, tool] : [tool];
}

/** A user-facing failure: printed without a stack, exit code 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** Loads a manifest directory (a UsageError when it is not one). */
export async function loadManifests(
  dir: string,
): Promise<{ state: ClusterState; diagnostics: Diagnostic[] }> {
  const info = await stat(dir).catch(() => undefined);
  if (!info?.isDirectory()) throw new UsageError(`--manifests: not a directory: ${dir}`);
  return loadManifestDir(dir);
}

/** Loads the cluster and settings; prints diagnostics to stderr. */
export async function loadCluster(
  flags: NodeFlags,
): Promise<{ state: ClusterState; config: ProxyConfig; diagnostics: Diagnostic[] }> {
  const { state, diagnostics } = await loadManifests(flags.manifests);
  const config = parseProxyConfig({
    nodeName: flags.node ?? process.env.NODE_NAME ?? '',
    clusterCIDRs: flags.clusterCidr,
    serviceCIDRs: flags.serviceCidr,
    ...(flags.detectLocalMode !== undefined ? { detectLocalMode: flags.detectLocalMode } : {}),
    ...(flags.podBridgeInterface !== undefined ? { podBridgeInterface: flags.podBridgeInterface } : {}),
    ...(flags.podInterfaceNamePrefix !== undefined
      ? { podInterfaceNamePrefix: flags.podInterfaceNamePrefix }
      : {}),
    nodePortAddresses: flags.nodeportAddresses,
    nodeIPs: flags.nodeIp,
    masqueradeAll: flags.masqueradeAll,
  });
  return { state, config, diagnostics };
}

/** Prints diagnostics, one per line, to stderr. */
export function printDiagnostics(ds: Diagnostic[]): void {
  for (const d of ds) process.stderr.write(formatDiagnostic(d) + '\n');
}
