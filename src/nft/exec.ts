/**
 * The kernel backend: runs the `nft` binary. Writes go as a text script on stdin to
 * `nft -f -` (one atomic transaction per call); reads are `nft -j list table`.
 */
import { existsSync } from 'node:fs';
import { execa, type ExecaError } from 'execa';
import type { Family, Transaction } from './ir.js';
import { type ApplyStages, type ApplyStats, type NftBackend, type NftReader, unwatched } from './backend.js';
import { describeIR, type TableDescription } from './diff.js';
import { elemLine } from './lines.js';
import { NftError, NftErrorKind } from './errors.js';
import { renderTransaction } from './render.js';
import { type ChainState, type SetState, rulesetFromJson, type TableState, tableKey } from './ruleset.js';

/** Options of the exec backend. */
export interface ExecBackendOptions {
  /**
   * The command that runs nft, program first. Default `['nft']`. Tests run nft inside a
   * network namespace with `['ip', 'netns', 'exec', NAME, 'nft']`.
   */
  command?: string[];
  /** Kill nft after this long. Default 120 s (a 50k-service load takes a few seconds). */
  timeoutMs?: number;
  /** Where nft finds protocol names (`probe` checks it exists). Default `/etc/protocols`. */
  protocolsFile?: string;
}

/** What `probe` found. */
export interface NftCapabilities {
  /** `nft --version`, e.g. `1.0.6`. */
  version: string;
  /** Features nftproxy needs that this nft or kernel lacks, with what nft said. Empty: all good. */
  missing: { feature: string; error: string }[];
}

/**
 * Features nftproxy's rulesets use, each as a minimal script. `probe` checks them with
 * `nft --check`, which asks the kernel but changes nothing.
 */
const FEATURES: { feature: string; script: string }[] = [
  {
    feature: 'verdict maps on concatenated address . protocol . port keys',
    script: `table ip nftproxy-probe {
      map m { type ipv4_addr . inet_proto . inet_service : verdict; }
      chain c { ip daddr . meta l4proto . th dport vmap @m; }
    }`,
  },
  {
    feature: 'typeof maps keyed by numgen, used as dnat address . port maps',
    script: `table ip nftproxy-probe {
      map b { typeof ip daddr . meta l4proto . th dport . numgen random mod 1 : ip daddr . th dport; }
      chain c {
        type nat hook prerouting priority -100; policy accept;
        dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @b
      }
    }`,
  },
  {
    feature: 'IPv6 NAT with the same maps',
    script: `table ip6 nftproxy-probe {
      map b { typeof ip6 daddr . meta l4proto . th dport . numgen random mod 1 : ip6 daddr . th dport; }
      chain c {
        type nat hook prerouting priority -100; policy accept;
        dnat ip6 to ip6 daddr . meta l4proto . th dport . numgen random mod 2 map @b
      }
    }`,
  },
  {
    feature: 'fib lookups of local addresses',
    script: `table ip nftproxy-probe {
      chain c {
        type nat hook prerouting priority -100; policy accept;
        fib daddr type local accept
      }
    }`,
  },
  {
    feature: 'masquerade fully-random',
    script: `table ip nftproxy-probe {
      chain c {
        type nat hook postrouting priority 100; policy accept;
        masquerade fully-random
      }
    }`,
  },
  {
    feature: 'reject with tcp reset',
    script: `table ip nftproxy-probe {
      chain c {
        type filter hook forward priority -110; policy accept;
        reject with tcp reset
      }
    }`,
  },
];

/** Backend that runs the real `nft`. */
export class ExecBackend implements NftBackend, NftReader {
  readonly name = 'nft';
  /** nft 1.0.6 cannot add a rule that uses an existing typeof map (see diff.ts). */
  readonly typeofRulesNeedNewTable = true;
  readonly describe = describeIR;
  /** nft lists a whole table at once (see describeTable): no set is too large to read. */
  readonly readLimit = Infinity;
  /** Element lines of the table `describeTable` listed last, by set, until asked for. */
  private listed: { table: string; sets: Map<string, string[]> } | undefined;
  private readonly command: string[];
  private readonly timeoutMs: number;
  private readonly protocolsFile: string;
  /** Process ids of the latest nft runs: the kernel names the committing process. */
  private readonly children: number[] = [];

  constructor(opts: ExecBackendOptions = {}) {
    this.command = opts.command ?? ['nft'];
    this.timeoutMs = opts.timeoutMs ?? 120_000;
    this.protocolsFile = opts.protocolsFile ?? '/etc/protocols';
  }

  private async nft(args: string[], input?: string): Promise<string> {
    const [file, ...pre] = this.command;
    try {
      const run = execa(file!, [...pre, ...args], {
        ...(input !== undefined ? { input } : {}),
        timeout: this.timeoutMs,
        maxBuffer: 1 << 30,
        stripFinalNewline: false,
      });
      // `ip netns exec` execs nft in its own process: the pid is nft's.
      if (run.pid !== undefined) {
        this.children.push(run.pid);
        if (this.children.length > 64) this.children.shift();
      }
      const r = await run;
      return r.stdout;
    } catch (e) {
      const err = e as ExecaError;
      if (err.code === 'ENOENT') {
        throw new NftError(NftErrorKind.Unavailable, `cannot run ${this.command.join(' ')}: not installed?`);
      }
      if (err.timedOut) throw new NftError(NftErrorKind.Failed, `nft timed out after ${this.timeoutMs} ms`);
      throw NftError.fromNftOutput(String(err.stderr ?? err.message), err.exitCode);
    }
  }

  /** Whether a commit by process `pid` was one of ours (an nft this backend ran). */
  ownsCommit(pid: number): boolean {
    return this.children.includes(pid);
  }

  async apply(tx: Transaction, stages: ApplyStages = unwatched): Promise<ApplyStats> {
    this.listed = undefined;
    if (tx.commands.length === 0) return { bytes: 0 };
    const script = await stages.encode(() => renderTransaction(tx));
    const bytes = Buffer.byteLength(script);
    await stages.send(bytes, () => this.applyScript(script));
    return { bytes };
  }

  /** Runs an nft script as one transaction. */
  async applyScript(script: string): Promise<void> {
    await this.nft(['-f', '-'], script);
  }

  /**
   * Lists the whole table once (nft 1.0.6 fetches every element of a table even to list one
   * of its sets) and keeps its elements for the `listElements` calls of the same full sync.
   */
  async describeTable(family: Family, table: string): Promise<TableDescription | undefined> {
    this.listed = undefined;
    const t = await this.listTable(family, table);
    if (!t) return undefined;
    const sets = new Map<string, string[]>();
    for (const [name, s] of t.sets) sets.set(name, [...s.elems.values()].map(elemLine));
    this.listed = { table: tableKey(family, table), sets };
    return describeIR(t);
  }

  async listElements(family: Family, table: string, set: string): Promise<string[] | undefined> {
    const cached = this.listed?.table === tableKey(family, table) ? this.listed.sets.get(set) : undefined;
    if (cached) {
      this.listed!.sets.delete(set);
      return cached;
    }
    const s = await this.listSet(family, table, set);
    return s && [...s.elems.values()].map(elemLine);
  }

  private async listJson(args: string[], family: Family, table: string): Promise<TableState | undefined> {
    let out: string;
    try {
      out = await this.nft(['-j', ...args]);
    } catch (e) {
      if (e instanceof NftError && e.kind === NftErrorKind.NotFound) return undefined;
      throw e;
    }
    return rulesetFromJson(JSON.parse(out)).tables.get(tableKey(family, table));
  }

  async listTable(family: Family, name: string): Promise<TableState | undefined> {
    let out: string;
    try {
      out = await this.nft(['-j', 'list', 'table', family, name]);
    } catch (e) {
      if (e instanceof NftError && e.kind === NftErrorKind.NotFound) return undefined;
      throw e;
    }
    return rulesetFromJson(JSON.parse(out)).tables.get(tableKey(family, name));
  }

  async listChain(family: Family, table: string, chain: string): Promise<ChainState | undefined> {
    let out: string;
    try {
      out = await this.nft(['-j', 'list', 'chain', family, table, chain]);
    } catch (e) {
      if (e instanceof NftError && e.kind === NftErrorKind.NotFound) return undefined;
      throw e;
    }
    // A chain listing is wrapped in its table, with only this chain.
    return rulesetFromJson(JSON.parse(out)).tables.get(tableKey(family, table))?.chains.get(chain);
  }

  async listSet(family: Family, table: string, set: string): Promise<SetState | undefined> {
    // nft answers `list map` of a set, and `list set` of a map, with ENOENT: try both.
    for (const kind of ['map', 'set']) {
      const t = await this.listJson(['list', kind, family, table, set], family, table);
      const s = t?.sets.get(set);
      if (s) return s;
    }
    return undefined;
  }

  /**
   * Checks the nft version and that nft and the kernel accept every feature nftproxy's
   * rulesets use. Changes nothing. Throws only if nft cannot be run at all.
   */
  async probe(): Promise<NftCapabilities> {
    const versionText = await this.nft(['--version']);
    const version = /v(\d+\.\d+\.\d+)/.exec(versionText)?.[1] ?? versionText.trim();
    const missing: NftCapabilities['missing'] = [];
    for (const f of FEATURES) {
      try {
        await this.nft(['--check', '-f', '-'], f.script);
      } catch (e) {
        if (!(e instanceof NftError) || e.kind === NftErrorKind.Unavailable) throw e;
        missing.push({ feature: f.feature, error: e.message });
      }
    }
    // Without protocol names nft still reads `tcp` but lists `6`: the kernel's tables would
    // never read back equal to ours, and every sync would rewrite them.
    if (!existsSync(this.protocolsFile))
      missing.push({
        feature: 'protocol names',
        error: `${this.protocolsFile} is missing (Debian and Ubuntu: the netbase package); nft would list protocols as numbers`,
      });
    return { version, missing };
  }
}
