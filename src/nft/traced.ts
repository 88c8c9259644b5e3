/**
 * One traced backend for all of them: each apply's two stages become the spans
 * `nftproxy.nft.render` (encoding the transaction) and `nftproxy.nft.transaction` (sending
 * it, with its size and exit code), children of whatever span is active (the sync's).
 * Everything else passes through unchanged.
 */
import type { Transaction } from './ir.js';
import type { ApplyStages, ApplyStats, NftBackend } from './backend.js';
import type { TableDescription } from './diff.js';
import type { Family } from './ir.js';
import type { TableState } from './ruleset.js';
import { Attr, inSpan, Spans } from '../telemetry/tracing.js';

/** `backend`, with its applies traced (a backend already traced is returned as it is). */
export function traced(backend: NftBackend): NftBackend {
  return backend instanceof TracedBackend ? backend : new TracedBackend(backend);
}

class TracedBackend implements NftBackend {
  // Set in the constructor only when the inner backend has them.
  declare readonly ownsCommit?: NonNullable<NftBackend['ownsCommit']>;
  declare readonly listElementCounters?: NonNullable<NftBackend['listElementCounters']>;
  declare readonly close?: NonNullable<NftBackend['close']>;

  constructor(private readonly inner: NftBackend) {
    const self = this as { -readonly [K in keyof TracedBackend]: TracedBackend[K] };
    if (inner.ownsCommit) self.ownsCommit = (pid) => inner.ownsCommit!(pid);
    if (inner.listElementCounters)
      self.listElementCounters = (family, table, set, known) =>
        inner.listElementCounters!(family, table, set, known);
    if (inner.close) self.close = () => inner.close!();
  }

  get name(): string {
    return this.inner.name;
  }

  get typeofRulesNeedNewTable(): boolean {
    return this.inner.typeofRulesNeedNewTable;
  }

  get readLimit(): number {
    return this.inner.readLimit;
  }

  describe(t: TableState): TableDescription {
    return this.inner.describe(t);
  }

  apply(tx: Transaction): Promise<ApplyStats> {
    const commands = tx.commands.length;
    const stages: ApplyStages = {
      encode: (fn) => inSpan(Spans.render, { [Attr.commands]: commands }, fn),
      send: (bytes, fn) =>
        inSpan(Spans.transaction, { [Attr.bytes]: bytes, [Attr.commands]: commands }, async (s) => {
          await fn();
          s.setAttribute(Attr.exitCode, 0);
        }),
    };
    return this.inner.apply(tx, stages);
  }

  describeTable(family: Family, table: string): Promise<TableDescription | undefined> {
    return this.inner.describeTable(family, table);
  }

  listElements(family: Family, table: string, set: string): Promise<string[] | undefined> {
    return this.inner.listElements(family, table, set);
  }
}
