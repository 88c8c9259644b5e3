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
  apply(tx: Transaction): Promise<ApplyStats>;
  describeTable(family: Family, table: string): Promise<TableDescription | undefined>;
  listElements(family: Family, table: string, set: string): Promise<string[] | undefined>;
  /** Releases what the backend holds open (a socket). */
  close?(): void;
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
