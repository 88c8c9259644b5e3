/**
 * The `nftproxy` command line.
 */
import { Command, CommanderError } from 'commander';
import { ConfigError } from '../proxy/config.js';
import { NftError } from '../nft/errors.js';
import { UsageError } from './common.js';
import { BindError } from '../net/http.js';
import { NoKubeconfigError } from '../k8s/source.js';
import { explainCommand } from './explain.js';
import { renderCommand } from './render.js';
import { cleanupCommand, runCommand } from './run.js';
import { statusCommand } from './status.js';
import { diffCommand } from './diff.js';
import { conntrackCommand } from './conntrack.js';

/** Builds the program. */
export function program(): Command {
  const p = new Command('nftproxy')
    .description('Kubernetes service proxy on nftables: flat verdict-map rulesets, applied atomically')
    .version('0.1.0')
    .addCommand(runCommand())
    .addCommand(renderCommand())
    .addCommand(statusCommand())
    .addCommand(explainCommand())
    .addCommand(diffCommand())
    .addCommand(conntrackCommand())
    .addCommand(cleanupCommand());
  // Every command throws instead of exiting (help, usage errors), so main() returns the code.
  const throwing = (c: Command): void => {
    c.exitOverride();
    c.commands.forEach(throwing);
  };
  throwing(p);
  return p;
}

/** Runs the CLI; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  try {
    await program().parseAsync(argv);
    // Commands that report a finding rather than fail (`diff`: differences) set exitCode.
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode;
    if (
      e instanceof UsageError ||
      e instanceof ConfigError ||
      e instanceof NftError ||
      e instanceof BindError ||
      e instanceof NoKubeconfigError
    ) {
      process.stderr.write(`nftproxy: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
}
