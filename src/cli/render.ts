/**
 * `nftproxy render`: the complete ruleset for a node, as an nft script (or JSON IR).
 */
import { Command } from 'commander';
import { compile } from '../proxy/compile.js';
import { renderRulesetScript, rulesetToJson } from '../nft/ruleset.js';
import { loadCluster, type NodeFlags, nodeOptions, printDiagnostics, UsageError } from './common.js';

/** The `render` command. */
export function renderCommand(): Command {
  return nodeOptions(new Command('render'))
    .description(
      'print the ruleset for a node; `nft -f -` of it creates or atomically replaces the nftproxy tables',
    )
    .option('-o, --output <format>', 'nft (script) or json (libnftables JSON IR)', 'nft')
    .action(async (flags: NodeFlags & { output: string }) => {
      if (flags.output !== 'nft' && flags.output !== 'json')
        throw new UsageError(`--output: want nft or json, got ${JSON.stringify(flags.output)}`);
      const { state, config, diagnostics } = await loadCluster(flags);
      const result = compile(state, config);
      printDiagnostics([...diagnostics, ...result.diagnostics]);
      if (state.services.length === 0) throw new UsageError(`no valid Service found in ${flags.manifests}`);
      process.stdout.write(
        flags.output === 'json'
          ? JSON.stringify(rulesetToJson(result.ruleset), null, 2) + '\n'
          : renderRulesetScript(result.ruleset),
      );
    });
}
