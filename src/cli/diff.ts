/**
 * `nftproxy diff`: what a sync would change in the live tables, given the cluster as the
 * manifests (or the API server) describe it. Exit code 0: in step; 1: they differ.
 */
import { Command } from 'commander';
import { ClusterStore } from '../k8s/store.js';
import type { ClusterState, Diagnostic } from '../k8s/types.js';
import { diffRulesets, type DiffStats } from '../nft/diff.js';
import { renderTransaction } from '../nft/render.js';
import { compile } from '../proxy/compile.js';
import {
  readSettingsFile,
  resolveSettings,
  type Settings,
  type SettingsInput,
} from '../controller/settings.js';
import { loadManifests, type NodeFlags, nodeOptions, printDiagnostics, UsageError } from './common.js';
import { listLiveRuleset } from './live.js';

/** One line summing up a diff. */
export function formatStats(s: DiffStats): string {
  const n = (count: number, one: string, what: string) =>
    count ? `${count} ${count === 1 ? one : `${one}s`} ${what}` : '';
  const parts = [
    n(s.tablesReplaced, 'table', 'created or replaced'),
    n(s.tablesDeleted, 'table', 'deleted'),
    n(s.chainsAdded, 'chain', 'added'),
    n(s.chainsDeleted, 'chain', 'deleted'),
    n(s.chainsFlushed, 'chain', 'rewritten'),
    n(s.elementsAdded, 'element', 'added'),
    n(s.elementsDeleted, 'element', 'deleted'),
  ].filter(Boolean);
  return parts.length ? parts.join(', ') : 'in step: nothing to change';
}

/** The cluster from the API server, listed once (every kind), then the watches closed. */
async function listCluster(
  kubeconfig: string | undefined,
  nodeName: string,
  timeoutMs: number,
): Promise<{ state: ClusterState; diagnostics: Diagnostic[] }> {
  const store = new ClusterStore(nodeName);
  const diagnostics: Diagnostic[] = [];
  // Loaded here: client-node takes most of a second to load, and only this path needs it.
  const { ApiSource } = await import('../k8s/api-source.js');
  const source = new ApiSource({ nodeName, ...(kubeconfig ? { kubeconfig } : {}) });
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      source.start({
        upsert: (p) => void store.upsert(p),
        remove: (kind, ns, name) => void store.remove(kind, ns, name),
        diagnostics: (ds) => void diagnostics.push(...ds),
      }),
      new Promise((_, reject) => {
        timer = setTimeout(
          () => reject(new UsageError(`could not list the cluster within ${timeoutMs / 1000} s`)),
          timeoutMs,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
    await source.stop();
  }
  return { state: store.state(), diagnostics };
}

type DiffFlags = Partial<NodeFlags> & {
  config?: string;
  kubeconfig?: string;
  netns?: string;
  output: string;
};

/** The settings `run` would use with these flags and config file. */
async function settingsOf(flags: DiffFlags): Promise<Settings> {
  const file = flags.config ? await readSettingsFile(flags.config) : {};
  const input: SettingsInput = {
    ...(flags.node !== undefined ? { nodeName: flags.node } : {}),
    ...(flags.clusterCidr?.length ? { clusterCIDRs: flags.clusterCidr } : {}),
    ...(flags.serviceCidr?.length ? { serviceCIDRs: flags.serviceCidr } : {}),
    ...(flags.detectLocalMode !== undefined ? { detectLocalMode: flags.detectLocalMode } : {}),
    ...(flags.podBridgeInterface !== undefined ? { podBridgeInterface: flags.podBridgeInterface } : {}),
    ...(flags.podInterfaceNamePrefix !== undefined
      ? { podInterfaceNamePrefix: flags.podInterfaceNamePrefix }
      : {}),
    ...(flags.nodeportAddresses?.length ? { nodePortAddresses: flags.nodeportAddresses } : {}),
    ...(flags.nodeIp?.length ? { nodeIPs: flags.nodeIp } : {}),
    ...(flags.masqueradeAll ? { masqueradeAll: true } : {}),
    ...(flags.manifests !== undefined ? { manifests: flags.manifests } : {}),
    ...(flags.kubeconfig !== undefined ? { kubeconfig: flags.kubeconfig } : {}),
  };
  return resolveSettings(input, file);
}

/** The `diff` command. */
export function diffCommand(): Command {
  return nodeOptions(new Command('diff'), { manifests: 'optional' })
    .description(
      'what a sync would change in the live tables: the cluster from --manifests, or else from the API server; exit code 1 when they differ',
    )
    .option('--config <file>', "the operator's YAML config file (node settings, source); flags override it")
    .option(
      '--kubeconfig <file>',
      'without --manifests: kubeconfig of the API server (default: in-cluster or ~/.kube/config)',
    )
    .option('--netns <name>', 'compare with the tables of this network namespace instead of the current one')
    .option('-o, --output <format>', 'text (summary and nft script) or json (counts)', 'text')
    .action(async (flags: DiffFlags) => {
      if (!['text', 'json'].includes(flags.output))
        throw new UsageError(`--output: want text or json, got ${JSON.stringify(flags.output)}`);
      if (flags.manifests !== undefined && flags.kubeconfig !== undefined)
        throw new UsageError('--manifests and --kubeconfig: choose one source');
      const settings = await settingsOf(flags);
      const config = settings.proxy;
      let state: ClusterState;
      if (settings.manifests !== undefined) {
        const loaded = await loadManifests(settings.manifests);
        printDiagnostics(loaded.diagnostics);
        state = loaded.state;
      } else {
        const listed = await listCluster(settings.kubeconfig, config.nodeName, 30_000);
        printDiagnostics(listed.diagnostics);
        state = listed.state;
      }
      const result = compile(state, config);
      printDiagnostics(result.diagnostics);
      const diff = diffRulesets(await listLiveRuleset(flags), result.ruleset);
      const differs = diff.tx.commands.length > 0;
      if (flags.output === 'json') {
        process.stdout.write(JSON.stringify({ differs, ...diff.stats }, null, 2) + '\n');
      } else {
        process.stdout.write(`# ${formatStats(diff.stats)}\n`);
        for (const r of diff.stats.replaceReasons) process.stdout.write(`# replaced: ${r}\n`);
        if (differs) process.stdout.write(renderTransaction(diff.tx));
      }
      if (differs) process.exitCode = 1;
    });
}
