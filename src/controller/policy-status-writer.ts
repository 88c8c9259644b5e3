/**
 * ProxyPolicy status and Events, written by every node without fights.
 *
 * Each node writes its results through the status subresource: a fresh GET, the new status
 * computed (policy-status.ts), and a JSON merge patch that carries the object's
 * resourceVersion as a precondition. A 409 Conflict means another node wrote meanwhile: GET
 * again, recompute, retry. Nothing is written when nothing would change, so in a steady
 * cluster the nodes are silent. See docs/proxypolicy-status.md.
 *
 * Events (Warning, reason Invalid or Conflicted) are posted by the node whose write moved the
 * Accepted condition there: the precondition lets exactly one writer make that change, and
 * the Event's name is derived from what it says (events.ts), so a cluster of any size posts
 * one Event per change, not one per node.
 */
import { CustomObjectsApi, type KubeConfig, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { API_VERSION, ConditionType, GROUP, KIND, PLURAL, Reason, VERSION } from '../api/types.js';
import { httpStatus } from '../k8s/reflector.js';
import { silentLogger, type Logger } from '../telemetry/log.js';
import { ApiEventRecorder, type EventRecorder, retryable, retryDelayMs } from './events.js';
import {
  computeStatus,
  mergePatchBetween,
  type PolicyResult,
  type ProxyPolicyStatus,
  removeNodeStatus,
  type StatusUpdate,
  statusOf,
} from './policy-status.js';
import { type Clock, systemClock } from './queue.js';

type Obj = Record<string, unknown>;

const errorText = (e: unknown): string => (e instanceof Error ? e.message.split('\n')[0]! : String(e));

/** Options of the writer. */
export interface PolicyStatusWriterOptions {
  kubeConfig: KubeConfig;
  /** This node: the `status.nodes` key it writes, and the Events' source host. */
  nodeName: string;
  log?: Logger;
  /** Retries of one policy's write after a conflict or a transient error. Default 5. */
  maxRetries?: number;
  /** Waits between retries (tests make it instant). */
  sleep?: (ms: number) => Promise<void>;
  clock?: Pick<Clock, 'now'>;
  /**
   * A policy whose result has not changed since this node last found its status right is
   * not read again for this long (someone may have edited the status by hand). Default 10 min.
   */
  recheckMs?: number;
  /** Where the Warning Events go (default: the API server, through kubeConfig). */
  events?: EventRecorder;
}

/** Policies written at once. */
const PARALLEL = 4;
type PolicyObject = Obj & {
  metadata: { resourceVersion?: string; uid?: string; generation?: number };
  status?: unknown;
};

/** What an update came to. */
type Outcome =
  | { kind: 'gone' }
  | { kind: 'unchanged' }
  | { kind: 'patched'; before: PolicyObject; after: PolicyObject; status: ProxyPolicyStatus };

interface Reported {
  /** The result last found written (undefined: not confirmed, read again next time). */
  fingerprint?: string;
  at: number;
}

/** Writes this node's ProxyPolicy results into their status, and Events for bad policies. */
export class PolicyStatusWriter {
  private readonly custom: CustomObjectsApi;
  private readonly log: Logger;
  private readonly maxRetries: number;
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly clock: Pick<Clock, 'now'>;
  /** Policies this node has an entry in (as far as it knows), by `ns/name`. */
  private readonly reported = new Map<string, Reported>();
  private readonly events: EventRecorder;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly opts: PolicyStatusWriterOptions) {
    this.custom = opts.kubeConfig.makeApiClient(CustomObjectsApi);
    this.log = opts.log ?? silentLogger;
    this.maxRetries = opts.maxRetries ?? 5;
    this.sleep = opts.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
    this.clock = opts.clock ?? systemClock;
    this.events =
      opts.events ??
      new ApiEventRecorder({
        kubeConfig: opts.kubeConfig,
        nodeName: opts.nodeName,
        log: this.log,
        sleep: this.sleep,
        clock: this.clock,
      });
  }

  /**
   * Writes what changed for these results, the policies as this node last synced them, and
   * removes this node's entry from policies it reported before that are not among them.
   * Never throws: failures are logged per policy and retried at the next report. Calls run
   * one after another. Returns how many objects were patched.
   */
  report(results: PolicyResult[]): Promise<number> {
    const run = this.queue.then(() => this.reportAll(results));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async reportAll(results: PolicyResult[]): Promise<number> {
    const keys = new Set(results.map((r) => `${r.namespace}/${r.name}`));
    const gone = [...this.reported.keys()].filter((k) => !keys.has(k));
    const tasks = [...results.map((r) => () => this.reportOne(r)), ...gone.map((k) => () => this.forget(k))];
    let patched = 0;
    let next = 0;
    const worker = async () => {
      while (next < tasks.length) if (await tasks[next++]!()) patched++;
    };
    await Promise.all(Array.from({ length: Math.min(PARALLEL, tasks.length) }, worker));
    return patched;
  }

  /** Writes one result if needed; true if it patched. */
  private async reportOne(r: PolicyResult): Promise<boolean> {
    const key = `${r.namespace}/${r.name}`;
    const fingerprint = JSON.stringify([
      r.uid,
      r.generation,
      r.problems,
      r.servicesSelected,
      [...r.conflicts],
      r.programmed,
      r.message,
    ]);
    const seen = this.reported.get(key);
    const now = this.clock.now();
    if (seen?.fingerprint === fingerprint && now - seen.at < (this.opts.recheckMs ?? 600_000)) return false;
    this.reported.set(key, { at: now }); // an entry may exist from now on
    try {
      const outcome = await this.update(r.namespace, r.name, (obj) =>
        // Another object of the same name: this result is about one that was deleted.
        r.uid && obj.metadata.uid && obj.metadata.uid !== r.uid
          ? undefined
          : computeStatus(obj, r, this.opts.nodeName, new Date(this.clock.now())),
      );
      if (outcome.kind === 'gone') {
        this.reported.delete(key);
        return false;
      }
      this.reported.set(key, { fingerprint, at: this.clock.now() });
      if (outcome.kind === 'unchanged') return false;
      await this.eventIfNeeded(key, outcome);
      return true;
    } catch (e) {
      this.log.warn('could not write ProxyPolicy status', { policy: key, error: errorText(e) });
      return false;
    }
  }

  /** Removes this node's entry from a policy it no longer has a result for. */
  private async forget(key: string): Promise<boolean> {
    const [namespace, name] = key.split('/') as [string, string];
    try {
      const outcome = await this.update(namespace, name, (obj) =>
        removeNodeStatus(obj, this.opts.nodeName, new Date(this.clock.now())),
      );
      this.reported.delete(key);
      return outcome.kind === 'patched';
    } catch (e) {
      this.log.warn('could not remove this node from ProxyPolicy status', {
        policy: key,
        error: errorText(e),
      });
      return false;
    }
  }

  /**
   * Reads the object, computes its new status, and patches it with the resourceVersion it
   * read as a precondition; on a conflict, all over again. `compute` returning undefined, or
   * no change, writes nothing.
   */
  private async update(
    namespace: string,
    name: string,
    compute: (obj: PolicyObject) => StatusUpdate | undefined,
  ): Promise<Outcome> {
    const ref = { group: GROUP, version: VERSION, namespace, plural: PLURAL, name };
    for (let attempt = 0; ; attempt++) {
      try {
        const before = (await this.custom.getNamespacedCustomObjectStatus(ref)) as PolicyObject;
        const update = compute(before);
        if (!update?.changed) return { kind: 'unchanged' };
        const body = {
          metadata: { resourceVersion: before.metadata.resourceVersion },
          status: mergePatchBetween(statusOf(before), update.status),
        };
        const after = (await this.custom.patchNamespacedCustomObjectStatus(
          { ...ref, body },
          setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
        )) as PolicyObject;
        return { kind: 'patched', before, after, status: update.status };
      } catch (e) {
        if (httpStatus(e) === 404) return { kind: 'gone' };
        if (attempt >= this.maxRetries || !(httpStatus(e) === 409 || retryable(e))) throw e;
        if (httpStatus(e) !== 409)
          this.log.debug('ProxyPolicy status write failed; retrying', {
            policy: `${namespace}/${name}`,
            error: errorText(e),
          });
        await this.sleep(retryDelayMs(attempt));
      }
    }
  }

  /** Posts a Warning Event if this write made the policy invalid or conflicted, or changed why. */
  private async eventIfNeeded(key: string, o: Extract<Outcome, { kind: 'patched' }>): Promise<void> {
    const was = statusOf(o.before).conditions?.find((c) => c.type === ConditionType.Accepted);
    const is = o.status.conditions?.find((c) => c.type === ConditionType.Accepted);
    if (!is || (is.reason !== Reason.Invalid && is.reason !== Reason.Conflicted)) return;
    if (
      was &&
      was.reason === is.reason &&
      was.message === is.message &&
      was.observedGeneration === is.observedGeneration
    )
      return;
    const [namespace, name] = key.split('/') as [string, string];
    await this.events.warn(
      {
        apiVersion: API_VERSION,
        kind: KIND,
        namespace,
        name,
        uid: o.after.metadata.uid ?? '',
        ...(o.after.metadata.resourceVersion ? { resourceVersion: o.after.metadata.resourceVersion } : {}),
        revision: is.observedGeneration,
      },
      is.reason,
      is.message,
    );
  }
}
