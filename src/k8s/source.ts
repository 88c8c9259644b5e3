/**
 * Sources of cluster objects: the manifest directory and the Kubernetes API.
 */
import type { Parsed } from './parse.js';
import type { ReflectorStatus } from './reflector.js';
import type { StoreKind } from './store.js';
import type { Diagnostic } from './types.js';

/** No API server can be found: the message says where nftproxy looked. */
export class NoKubeconfigError extends Error {
  override readonly name = 'NoKubeconfigError';
}

/** Where a source sends what it sees. */
export interface SourceSink {
  /** An object appeared or changed. */
  upsert(p: Parsed): void;
  /** An object went away (or became invalid). */
  remove(kind: StoreKind, namespace: string, name: string): void;
  /** Problems with objects; those objects are treated as absent. */
  diagnostics(ds: Diagnostic[]): void;
  /**
   * The keys (`namespace/name`; `/name` for cluster-scoped objects) of every object of a
   * kind the sink holds: what a relist compares with to find what went away. Without it, a
   * source remembers the keys itself.
   */
  keys?(kind: StoreKind): Iterable<string>;
}

/**
 * A source of cluster objects.
 *
 * Contract: `start` resolves once every resource has been read completely once (synced);
 * the sink has then seen the whole cluster. Changes keep flowing to the sink until `stop`.
 * Failures after that are retried by the source itself; they never remove objects the sink
 * already has.
 */
export interface ClusterSource {
  start(sink: SourceSink): Promise<void>;
  stop(): Promise<void>;
  /** Each watched resource and where its watch is (sources that watch an API server). */
  watches?(): ReflectorStatus[];
}
