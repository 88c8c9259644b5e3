/**
 * `nftproxy diff`: what a sync would change in the live tables, given the cluster as the
 * manifests (or the API server) describe it. Exit code 0: in step; 1: they differ.
 */
import { Command } from 'commander';
import { ClusterStore } from '../k8s/store.js';
import { ApiSource } from '../k8s/api-source.js';
import type { ClusterState, Diagnostic } from '../k8s/types.js';
import { diffRulesets, type DiffStats } from '../nft/diff.js';
import { renderTransaction } from '../nft/render.js';
import { compile } from '../proxy/compile.js';
import { parseProxyConfig, type ProxyConfig } from '../proxy/config.js';
import { loadCluster, type NodeFlags, nodeOptions, printDiagnostics, UsageError } from './common.js';
import { listLiveRuleset } from './live.js';

/** One line summing up a diff. */
export function formatStats(s: DiffStats): string {
  const parts = [
    s.tablesReplaced && `${s.tablesReplaced} tables created or replaced`,
    s.tablesDeleted && `${s.tablesDeleted} tables deleted`,
    s.chainsAdded && `${s.chainsAdded} chains added`,
    s.chainsDeleted && `${s.chainsDeleted} chains deleted`,
    s.chainsFlushed && `${s.chainsFlushed} chains rewritten`,
    s.elementsAdded && `${s.elementsAdded} elements added`,
    s.elementsDeleted && `${s.elementsDeleted} elements deleted`,
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

type DiffFlags = Partial<NodeFlags> & { kubeconfig?: string; netns?: string; output: string };

/** The `diff` command. */
export function diffCommand(): Command {
  return nodeOptions(new Command('diff'), { manifests: 'optional' })
    .description(
      'what a sync would change in the live tables: the cluster from --manifests, or else from the API server; exit code 1 when they differ',
    )
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
      let state: ClusterState;
      let config: ProxyConfig;
      if (flags.manifests !== undefined) {
        const loaded = await loadCluster(flags as NodeFlags);
        printDiagnostics(loaded.diagnostics);
        ({ state, config } = loaded);
      } else {
        config = parseProxyConfig({
          nodeName: flags.node ?? process.env.NODE_NAME ?? '',
          clusterCIDRs: flags.clusterCidr ?? [],
          nodePortAddresses: flags.nodeportAddresses ?? [],
          nodeIPs: flags.nodeIp ?? [],
          masqueradeAll: flags.masqueradeAll ?? false,
        });
        if (!config.nodeName) throw new UsageError('--node (or $NODE_NAME): which node to compare for?');
        const listed = await listCluster(flags.kubeconfig, config.nodeName, 30_000);
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
