/**
 * Where nftables state lives: the kernel (exec.ts) or memory (fake.ts).
 */
import type { Family, Transaction } from './ir.js';
import type { ChainState, SetState, TableState } from './ruleset.js';

/** What one `apply` sent. */
export interface ApplyStats {
  /** Size of the nft script (text form) of the transaction; 0 when there was nothing to do. */
  bytes: number;
}

/**
 * A place that holds nftables tables.
 *
 * Contract: `apply` is atomic. It applies every command of the transaction or, when it
 * throws an `NftError`, none of them. `listTable` returns the table as it is now, or
 * undefined when it does not exist; `listChain` and `listSet` do the same for one chain or
 * set, cheaply.
 */
export interface NftBackend {
  apply(tx: Transaction): Promise<ApplyStats>;
  listTable(family: Family, name: string): Promise<TableState | undefined>;
  listChain(family: Family, table: string, chain: string): Promise<ChainState | undefined>;
  /** One set or map with its elements (dynamic ones as the kernel filled them), or undefined. */
  listSet(family: Family, table: string, set: string): Promise<SetState | undefined>;
}
