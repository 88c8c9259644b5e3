/**
 * The operator for tests, the two ways it runs: in this process, with `testSettings`, and as
 * `nftproxy run` in a process of its own, the way it runs on a node (`OperatorProcess`, for
 * end-to-end tests).
 */
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { resolveSettings, type Settings, type SettingsInput } from '../../src/controller/settings.js';

/**
 * Settings for an operator under test: no /healthz or /metrics server and 10 ms between
 * syncs unless `input` says otherwise.
 */
export function testSettings(input: SettingsInput): Settings {
  return resolveSettings({
    healthzBindAddress: '',
    metricsBindAddress: '',
    minSyncInterval: '10ms',
    ...input,
  });
}

/** bin/nftproxy.js of this checkout. */
export const BIN = fileURLToPath(new URL('../../bin/nftproxy.js', import.meta.url));

/** A log line of the operator. */
export type LogLine = { level: string; msg: string } & Record<string, unknown>;

/** `nftproxy run ARGS`, its output streamed (not buffered), never rejecting. */
const launch = (args: string[]) => execa('node', [BIN, 'run', ...args], { reject: false, buffer: false });
type Proc = ReturnType<typeof launch>;

/** A running operator process. */
export class OperatorProcess {
  readonly logs: LogLine[] = [];
  /** What it printed on stdout (spans, with --trace-console). */
  stdout = '';
  private waiters: { pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = [];
  private exited = false;

  private constructor(private readonly proc: Proc) {
    let buf = '';
    proc.stderr!.on('data', (d: Buffer) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        let parsed: LogLine;
        try {
          parsed = JSON.parse(line) as LogLine;
        } catch {
          parsed = { level: 'raw', msg: line };
        }
        this.logs.push(parsed);
        for (const w of [...this.waiters]) {
          if (w.pred(parsed)) {
            this.waiters.splice(this.waiters.indexOf(w), 1);
            w.resolve(parsed);
          }
        }
      }
    });
    proc.stdout!.on('data', (d: Buffer) => (this.stdout += d.toString()));
    void proc.then(() => (this.exited = true));
  }

  /** Starts `nftproxy run ARGS` and waits for its first sync. */
  static async start(args: string[]): Promise<OperatorProcess> {
    const p = new OperatorProcess(launch(args));
    await p.waitFor((l) => l.msg === 'synced', 30_000);
    return p;
  }

  /** Waits for a log line; the index it starts looking from defaults to now. */
  waitFor(pred: (l: LogLine) => boolean, timeoutMs = 10_000, from = this.logs.length): Promise<LogLine> {
    const seen = this.logs.slice(from).find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new Error(
              `no matching log line in ${timeoutMs} ms; last: ${JSON.stringify(this.logs.slice(-5))}`,
            ),
          ),
        timeoutMs,
      );
      this.waiters.push({ pred, resolve: (l) => (clearTimeout(timer), resolve(l)) });
    });
  }

  /** Sync log lines so far. */
  syncs(): LogLine[] {
    return this.logs.filter((l) => l.msg === 'synced');
  }

  /** Sends a signal and waits for the exit. */
  async kill(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | undefined> {
    if (!this.exited) this.proc.kill(signal);
    const r = await this.proc;
    return r.exitCode;
  }
}
