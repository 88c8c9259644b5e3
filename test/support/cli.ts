/**
 * The CLI in this process: `main(argv)` as bin/nftproxy.js calls it, with stdout and stderr
 * captured and the environment changed for the call only. Much faster than a subprocess per
 * command (no Node start, no tsx); test/cli/bin.test.ts runs the real bin.
 */
import { main } from '../../src/cli/main.js';

/** What one command did. */
export interface CliResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** Only one at a time: stdout, stderr, the environment and process.exitCode are global. */
let running: Promise<unknown> = Promise.resolve();

/**
 * Runs `nftproxy ARGS` (in `cwd`, when given); `env` sets (a string) or removes (undefined)
 * variables for the call.
 * An exception main() does not handle becomes exit code 1 with its stack on stderr, as Node
 * would print it.
 */
export function runCli(
  args: string[],
  env: Record<string, string | undefined> = {},
  cwd?: string,
): Promise<CliResult> {
  const run = running.then(() => runNow(args, env, cwd));
  running = run.catch(() => undefined);
  return run;
}

async function runNow(
  args: string[],
  env: Record<string, string | undefined>,
  cwd: string | undefined,
): Promise<CliResult> {
  const out: string[] = [];
  const err: string[] = [];
  const capture =
    (into: string[]) =>
    (chunk: string | Uint8Array, ...rest: unknown[]): boolean => {
      into.push(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString());
      const done = rest.find((r) => typeof r === 'function') as (() => void) | undefined;
      done?.();
      return true;
    };
  const saved = {
    stdout: process.stdout.write.bind(process.stdout),
    stderr: process.stderr.write.bind(process.stderr),
    env: Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]])),
    exitCode: process.exitCode,
    cwd: process.cwd(),
    exit: process.exit,
  };
  if (cwd) process.chdir(cwd);
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  process.exitCode = undefined;
  // A command that exits would end the test run itself, quietly, with code 0.
  process.exit = ((code?: number) => {
    throw new Error(`process.exit(${code ?? ''}) called: main() must return the exit code`);
  }) as typeof process.exit;
  process.stdout.write = capture(out) as typeof process.stdout.write;
  process.stderr.write = capture(err) as typeof process.stderr.write;
  let exitCode: number;
  try {
    exitCode = await main(['node', 'nftproxy', ...args]);
  } catch (e) {
    err.push(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    exitCode = 1;
  } finally {
    process.stdout.write = saved.stdout;
    process.stderr.write = saved.stderr;
    for (const [k, v] of Object.entries(saved.env)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    process.exitCode = saved.exitCode;
    process.exit = saved.exit;
    process.chdir(saved.cwd);
  }
  return { exitCode, stdout: out.join(''), stderr: err.join('') };
}
