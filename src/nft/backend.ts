/**
 * Where nftables state lives: the kernel (netlink/backend.ts speaks nf_tables netlink,
 * exec.ts runs the `nft` binary) or memory (fake.ts).
 */
import type { Describer, TableDescription } from './diff.js';
import type { Family, Transaction } from './ir.js';
import type { ChainState, SetState, TableState } from './ruleset.js';

/** What one `apply` sent. */
export interface ApplyStats {
  /** Size of what was sent (nft script or netlink batch); 0 when there was nothing to do. */
  bytes: number;
}

/**
 * The two stages of an apply, for whoever watches them (traced.ts times them): encoding the
 * transaction (an nft script, a netlink batch), then sending what was encoded.
 */
export interface ApplyStages {
  encode<T>(fn: () => T | Promise<T>): Promise<T>;
  send(bytes: number, fn: () => void | Promise<void>): Promise<void>;
}

/** Stages nobody watches. */
export const unwatched: ApplyStages = {
  encode: async (fn) => fn(),
  send: async (_bytes, fn) => fn(),
};

/** Elements a caller knows a set holds: how many, and their lines, made only when asked for. */
export interface KnownElements {
  count: number;
  lines(): readonly string[];
}

/**
 * A place that holds nftables tables, as the syncer needs it.
 *
 * Contract: `apply` is atomic. It applies every command of the transaction or, when it
 * throws an `NftError`, none of them. `describeTable` reports a table's chains, rules and
 * set declarations (no elements) in the same terms as `describe` reports a desired one, or
 * undefined when the table does not exist; `listElements` reports one set's elements as
 * lines, or undefined when the set does not exist. Reads reflect every apply that resolved.
 */
export interface NftBackend extends Describer {
  /** A short name for logs and traces: `netlink`, `nft`, `fake`. */
  readonly name: string;
  /** Applies `tx`, reporting its two stages through `stages` (default: nobody watches). */
  apply(tx: Transaction, stages?: ApplyStages): Promise<ApplyStats>;
  describeTable(family: Family, table: string): Promise<TableDescription | undefined>;
  listElements(family: Family, table: string, set: string): Promise<string[] | undefined>;
  /**
   * Whether a commit the kernel reports as made by process `pid` (its notifications name the
   * committing process) was made through this backend. Backends of the kernel have it.
   */
  ownsCommit?(pid: number): boolean;
  /**
   * The counters of a set's elements (sets declared with `counter`), by element line: packets
   * seen. Undefined when the set does not exist. Backends that cannot read them lack it.
   */
  listElementCounters?(
    family: Family,
    table: string,
    set: string,
    /** The elements wanted, when known: a large set is then read by key, not by a dump. */
    known?: KnownElements,
  ): Promise<Map<string, number> | undefined>;
  /** Releases what the backend holds open (a socket). */
  close?(): void;
}

/** What someone else's commit changed in one of our tables (one family's). */
export interface TableChange {
  /** The table itself, a chain, a rule or a set declaration changed. */
  skeleton: boolean;
  /**
   * Element changes by set, in commit order: added (`+`) and deleted (`-`) lines, or
   * `unknown` when they could not be read as lines (interval sets): compare the whole set.
   */
  elements: Map<string, { op: '+' | '-'; line: string }[] | 'unknown'>;
}

/** A commit to our tables by someone else, as the kernel announced it. */
export interface ForeignChange {
  /** The committing process, as the kernel names it. */
  pid: number;
  process: string;
  /** By family (`ip`, `ip6`). */
  tables: Map<Family, TableChange>;
}

/** Merges `b` into `a` (changes of several commits, in order). */
export function mergeChanges(a: Map<Family, TableChange>, b: Map<Family, TableChange>): void {
  for (const [family, c] of b) {
    const into = a.get(family);
    if (!into) {
      a.set(family, { skeleton: c.skeleton, elements: new Map(c.elements) });
      continue;
    }
    into.skeleton ||= c.skeleton;
    for (const [set, evs] of c.elements) {
      const have = into.elements.get(set);
      if (have === 'unknown') continue;
      into.elements.set(set, evs === 'unknown' || !have ? evs : [...have, ...evs]);
    }
  }
}

/**
 * A backend that also reads tables back as IR, for the tools that trace and print them
 * (explain, status, diff) and for tests.
 */
export interface NftReader {
  listTable(family: Family, name: string): Promise<TableState | undefined>;
  listChain(family: Family, table: string, chain: string): Promise<ChainState | undefined>;
  /** One set or map with its elements (dynamic ones as the kernel filled them), or undefined. */
  listSet(family: Family, table: string, set: string): Promise<SetState | undefined>;
}
