/**
 * The sync queue: level-triggered, coalescing, single-flight.
 *
 * Changes mark service keys dirty (or ask for a full sync). One sync runs at a time; what
 * arrives meanwhile is merged into the next one. A lone change after a quiet period syncs at
 * once (no added latency); syncs start at least `minIntervalMs` apart, so a burst of events
 * becomes a handful of transactions. A failed sync is retried with exponential backoff, and
 * the retry is a full sync.
 */
import { mergeChanges, type TableChange } from '../nft/backend.js';
import type { Family } from '../nft/ir.js';
import { silentLogger, type Logger } from '../telemetry/log.js';

import { type Clock, systemClock } from '../clock.js';

export { type Clock, systemClock };

/** What one sync must do. */
export interface SyncRequest {
  /** Recompile everything and reconcile against the kernel. */
  full: boolean;
  /** Service keys to recompile (when not full). */
  dirty: Set<string>;
  /** What others changed in our tables, to put back (when not full; a full sync does it all). */
  repair?: Map<Family, TableChange>;
  /** Why this sync runs: `change`, `start`, `retry`, `periodic`, `drift`, ... */
  reasons: Set<string>;
  /** When the oldest change in this request was queued. */
  queuedAt: number;
}

/** Runs one sync; throws when it failed (the kernel is then unchanged). */
export type SyncFn = (req: SyncRequest) => Promise<void>;

/** Settings of the queue. */
export interface SyncQueueOptions {
  /** Minimum time between the starts of two syncs. Default 100 ms. */
  minIntervalMs?: number;
  /** First retry delay after a failure; doubles each time. Default 1 s. */
  backoffInitialMs?: number;
  /** Longest retry delay. Default 30 s. */
  backoffMaxMs?: number;
  clock?: Clock;
  log?: Logger;
  /** Called whenever a change is queued (markDirty with keys, requestFull), with the time. */
  onQueued?: (at: number) => void;
}

/** The sync queue. */
export class SyncQueue {
  private dirty = new Set<string>();
  private repair = new Map<Family, TableChange>();
  private reasons = new Set<string>();
  private full = false;
  private queuedAt: number | undefined;
  private running: Promise<void> | undefined;
  private timer: unknown;
  private lastStart = -Infinity;
  private failures = 0;
  private stopped = false;
  private idleWaiters: (() => void)[] = [];
  private readonly clock: Clock;
  private readonly log: Logger;

  /** When the last successful sync finished, or undefined. */
  lastSuccessAt: number | undefined;
  /** Syncs run, and how many failed. */
  readonly counts = { syncs: 0, failures: 0 };

  constructor(
    private readonly run: SyncFn,
    private readonly opts: SyncQueueOptions = {},
  ) {
    this.clock = opts.clock ?? systemClock;
    this.log = opts.log ?? silentLogger;
  }

  /** Marks services dirty. */
  markDirty(keys: Iterable<string>, reason = 'change'): void {
    let any = false;
    for (const k of keys) {
      this.dirty.add(k);
      any = true;
    }
    if (!any) return;
    this.reasons.add(reason);
    this.queued();
  }

  /** Asks for a full sync. */
  requestFull(reason: string): void {
    this.full = true;
    this.reasons.add(reason);
    this.queued();
  }

  /** Asks for a repair of what someone else changed in our tables. */
  requestRepair(changes: Map<Family, TableChange>, reason = 'drift'): void {
    if (!changes.size) return;
    mergeChanges(this.repair, changes);
    this.reasons.add(reason);
    this.queued();
  }

  /** When the oldest change not yet applied was queued, if any is pending. */
  get pendingSince(): number | undefined {
    return this.queuedAt;
  }

  /** Consecutive failed syncs. */
  get consecutiveFailures(): number {
    return this.failures;
  }

  /** Resolves when nothing is pending or running. */
  idle(): Promise<void> {
    if (!this.running && !this.hasWork()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Stops: no further syncs start; waits for the one running. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
    for (const w of this.idleWaiters.splice(0)) w();
  }

  private hasWork(): boolean {
    return this.full || this.dirty.size > 0 || this.repair.size > 0;
  }

  private queued(): void {
    const now = this.clock.now();
    this.queuedAt ??= now;
    this.opts.onQueued?.(now);
    this.kick();
  }

  private backoffMs(): number {
    const initial = this.opts.backoffInitialMs ?? 1000;
    return Math.min(initial * 2 ** (this.failures - 1), this.opts.backoffMaxMs ?? 30_000);
  }

  private kick(): void {
    if (this.stopped || this.running || this.timer !== undefined || !this.hasWork()) return;
    const now = this.clock.now();
    const earliest = this.failures
      ? now + this.backoffMs()
      : this.lastStart + (this.opts.minIntervalMs ?? 100);
    // Even a zero delay goes through a timer, so that events of the same tick coalesce.
    this.timer = this.clock.setTimeout(
      () => {
        this.timer = undefined;
        this.running = this.runOnce().finally(() => {
          this.running = undefined;
          if (this.hasWork()) this.kick();
          else for (const w of this.idleWaiters.splice(0)) w();
        });
      },
      Math.max(0, earliest - now),
    );
  }

  private async runOnce(): Promise<void> {
    const req: SyncRequest = {
      full: this.full,
      dirty: this.dirty,
      repair: this.repair,
      reasons: this.reasons,
      queuedAt: this.queuedAt ?? this.clock.now(),
    };
    this.full = false;
    this.dirty = new Set();
    this.repair = new Map();
    this.reasons = new Set();
    this.queuedAt = undefined;
    this.lastStart = this.clock.now();
    this.counts.syncs++;
    try {
      await this.run(req);
      this.failures = 0;
      this.lastSuccessAt = this.clock.now();
    } catch (e) {
      this.failures++;
      this.counts.failures++;
      // The kernel is unchanged, so what was asked must be done again; after a failure the
      // state is re-read from the kernel, hence a full sync.
      this.full = true;
      this.reasons.add('retry');
      for (const k of req.dirty) this.dirty.add(k);
      this.queuedAt = Math.min(this.queuedAt ?? Infinity, req.queuedAt);
      this.log.error('sync failed; retrying as a full sync', {
        error: e,
        failures: this.failures,
        retryInMs: this.backoffMs(),
      });
    }
  }
}
