/**
 * ProxyPolicy status and Events, written by every node without fights.
 *
 * Each node owns one entry, `status.nodes.<nodeName>`: whether its last sync put the policy's
 * rules in the kernel. The node-independent parts (observedGeneration, servicesSelected, the
 * Accepted and Programmed conditions) are recomputed from a fresh GET by whichever node
 * writes, and the write is a JSON merge patch of the status subresource that carries the
 * object's resourceVersion as a precondition. A 409 Conflict means another node wrote
 * meanwhile: GET again, recompute, retry. Nothing is written when nothing would change, so
 * in a steady cluster the nodes are silent. See docs/proxypolicy-status.md.
 *
 * Events (Warning, reason Invalid or Conflicted) are posted by the node whose write moved the
 * Accepted condition there: the precondition lets exactly one writer make that change, so a
 * cluster of any size posts one Event per change, not one per node.
 */
import { randomBytes } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import {
  CoreV1Api,
  CustomObjectsApi,
  type CoreV1Event,
  type KubeConfig,
  PatchStrategy,
  setHeaderOptions,
} from '@kubernetes/client-node';
import {
  API_VERSION,
  ConditionType,
  GROUP,
  KIND,
  PLURAL,
  type PolicyProblem,
  Reason,
  VERSION,
} from '../api/types.js';
import { silentLogger, type Logger } from '../telemetry/log.js';
import { type Clock, systemClock } from './queue.js';

/** One node's view of one policy after a sync. */
export interface PolicyResult {
  namespace: string;
  name: string;
  uid?: string;
  generation: number;
  /** Validation problems; empty = valid. */
  problems: PolicyProblem[];
  /** Services of its namespace it selects (valid policies only). */
  servicesSelected: string[];
  /** Selected services governed by another policy: service key -> winning policy `ns/name`. */
  conflicts: Map<string, string>;
  /** Whether this node's last sync put the policy's rules in the kernel, and why not. */
  programmed: boolean;
  message: string;
}

/** A condition, shaped as metav1.Condition. */
export interface PolicyCondition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  observedGeneration: number;
  /** RFC 3339, seconds. Changes only when `status` does. */
  lastTransitionTime: string;
  reason: string;
  message: string;
}

/** One node's entry in `status.nodes`. */
export interface NodePolicyStatus {
  /** The generation this node last synced. */
  observedGeneration: number;
  programmed: boolean;
  message: string;
  /** RFC 3339, seconds. When anything else in the entry last changed. */
  lastUpdateTime: string;
}

/** `status` of a ProxyPolicy. */
export interface ProxyPolicyStatus {
  /** The generation that servicesSelected and the Accepted condition describe. */
  observedGeneration?: number;
  /** How many services of its namespace the policy selects and wins (0 when invalid). */
  servicesSelected?: number;
  conditions?: PolicyCondition[];
  /** By node name. */
  nodes?: Record<string, NodePolicyStatus>;
}

/** What a status computation came to. */
export interface StatusUpdate {
  status: ProxyPolicyStatus;
  /** Whether `status` differs from the current one in anything but times. */
  changed: boolean;
}

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
}

/** Source and reporting component of Events. */
export const COMPONENT = 'nftproxy';

/** Policies written at once. */
const PARALLEL = 4;
/** Nodes named in a ProgrammingFailed message; the rest are counted. */
const MAX_NODES_NAMED = 5;
/** Condition messages are cut here (metav1.Condition allows 32768). */
const MAX_MESSAGE = 4096;
/** Node entry messages are cut here (the CRD allows 1024). */
const MAX_NODE_MESSAGE = 1024;

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** RFC 3339 with seconds, as Kubernetes writes times. */
const rfc3339 = (d: Date): string => d.toISOString().replace(/\.\d+Z$/, 'Z');

const clip = (s: string, max = MAX_MESSAGE): string => (s.length <= max ? s : `${s.slice(0, max - 1)}…`);

/** By key, in code-point order: every node must word the aggregate the same. */
const byKey = ([a]: [string, unknown], [b]: [string, unknown]): number => (a < b ? -1 : a > b ? 1 : 0);

const plural = (n: number, word: string): string => `${n} ${word}${n === 1 ? '' : 's'}`;

/** The Accepted condition for a result (without time). */
function accepted(r: PolicyResult): Omit<PolicyCondition, 'lastTransitionTime'> {
  const base = { type: ConditionType.Accepted, observedGeneration: r.generation };
  if (r.problems.length)
    return {
      ...base,
      status: 'False',
      reason: Reason.Invalid,
      message: clip(r.problems.map((p) => `${p.field}: ${p.message}`).join('; ')),
    };
  if (r.conflicts.size) {
    const lost = [...r.conflicts].sort(byKey);
    return {
      ...base,
      status: 'True',
      reason: Reason.Conflicted,
      message: clip(
        `${lost.length} of ${plural(r.servicesSelected.length, 'selected service')} ` +
          `governed by another policy: ${lost.map(([svc, by]) => `${svc} (by ${by})`).join(', ')}`,
      ),
    };
  }
  if (!r.servicesSelected.length)
    return {
      ...base,
      status: 'True',
      reason: Reason.NoServices,
      message: `selects no services in namespace ${r.namespace}`,
    };
  return {
    ...base,
    status: 'True',
    reason: Reason.Accepted,
    message: `selects ${plural(r.servicesSelected.length, 'service')}`,
  };
}

/** The Programmed condition, from the node entries that observed `generation`. */
function programmed(s: ProxyPolicyStatus, generation: number): Omit<PolicyCondition, 'lastTransitionTime'> {
  const base = { type: ConditionType.Programmed, observedGeneration: generation };
  const acc = s.conditions?.find((c) => c.type === ConditionType.Accepted);
  if (acc?.observedGeneration === generation && acc.status === 'False')
    return {
      ...base,
      status: 'False',
      reason: Reason.Invalid,
      message: 'not programmed: the policy is invalid',
    };
  // Entries of older generations do not count: those nodes have not synced this spec yet
  // (or are gone; nothing removes the entries of deleted nodes).
  const current = Object.entries(s.nodes ?? {})
    .filter(([, n]) => n.observedGeneration === generation)
    .sort(byKey);
  if (!current.length || acc?.observedGeneration !== generation)
    return {
      ...base,
      status: 'Unknown',
      reason: Reason.Pending,
      message: `no node has reported generation ${generation} yet`,
    };
  const failed = current.filter(([, n]) => !n.programmed);
  if (!failed.length)
    return {
      ...base,
      status: 'True',
      reason: Reason.Programmed,
      message: `programmed on ${current.length} of ${plural(current.length, 'node')}`,
    };
  const named = failed.slice(0, MAX_NODES_NAMED).map(([node, n]) => `${node}: ${n.message}`);
  if (failed.length > MAX_NODES_NAMED) named.push(`and ${failed.length - MAX_NODES_NAMED} more`);
  return {
    ...base,
    status: 'False',
    reason: Reason.ProgrammingFailed,
    message: clip(`failed on ${failed.length} of ${plural(current.length, 'node')}: ${named.join('; ')}`),
  };
}

/** Puts a condition in place of the one of its type; its time moves only if its status did. */
function setCondition(s: ProxyPolicyStatus, c: Omit<PolicyCondition, 'lastTransitionTime'>, now: Date): void {
  const conditions = (s.conditions ??= []);
  const i = conditions.findIndex((o) => o.type === c.type);
  const old = conditions[i];
  const lastTransitionTime =
    old && old.status === c.status && old.lastTransitionTime ? old.lastTransitionTime : rfc3339(now);
  if (i < 0) conditions.push({ ...c, lastTransitionTime });
  else conditions[i] = { ...c, lastTransitionTime };
}

/** A copy of the status an object holds, malformed parts dropped. */
function statusOf(current: object | undefined): ProxyPolicyStatus {
  const raw = isObj(current) && isObj(current.status) ? structuredClone(current.status) : {};
  if (raw.conditions !== undefined && !Array.isArray(raw.conditions)) delete raw.conditions;
  if (Array.isArray(raw.conditions)) raw.conditions = raw.conditions.filter(isObj);
  if (raw.nodes !== undefined && !isObj(raw.nodes)) delete raw.nodes;
  return raw as ProxyPolicyStatus;
}

function generationOf(current: object | undefined): number | undefined {
  const meta = isObj(current) && isObj(current.metadata) ? current.metadata : {};
  return typeof meta.generation === 'number' ? meta.generation : undefined;
}

const TIMES = new Set(['lastTransitionTime', 'lastUpdateTime']);

/** Equal but for times (which move only along with what they time). */
function sameIgnoringTimes(a: ProxyPolicyStatus, b: ProxyPolicyStatus): boolean {
  const strip = (s: ProxyPolicyStatus) =>
    JSON.parse(JSON.stringify(s, (k, v: unknown) => (TIMES.has(k) ? undefined : v))) as unknown;
  return isDeepStrictEqual(strip(a), strip(b));
}

/**
 * The status `current` (the object as read, or undefined) should have after this node's
 * `result`: this node's entry, and, when the result is for the object's generation, the
 * node-independent parts; the Programmed condition is aggregated over all nodes' entries.
 * Pure.
 */
export function computeStatus(
  current: object | undefined,
  result: PolicyResult,
  nodeName: string,
  now: Date,
): StatusUpdate {
  const generation = generationOf(current) ?? result.generation;
  const old = statusOf(current);
  const next = structuredClone(old);
  // A result for an older generation (the policy changed since this node synced) still
  // says what this node programmed, but not whether the current spec is valid.
  if (result.generation === generation) {
    next.observedGeneration = generation;
    next.servicesSelected = result.problems.length
      ? 0
      : result.servicesSelected.filter((svc) => !result.conflicts.has(svc)).length;
    setCondition(next, accepted(result), now);
  }
  const entry = {
    observedGeneration: result.generation,
    programmed: result.programmed,
    message: clip(result.message, MAX_NODE_MESSAGE),
  };
  const mine = old.nodes?.[nodeName];
  const same =
    mine?.lastUpdateTime &&
    mine.observedGeneration === entry.observedGeneration &&
    mine.programmed === entry.programmed &&
    mine.message === entry.message;
  next.nodes = {
    ...next.nodes,
    [nodeName]: { ...entry, lastUpdateTime: same ? mine.lastUpdateTime : rfc3339(now) },
  };
  setCondition(next, programmed(next, generation), now);
  return { status: next, changed: !sameIgnoringTimes(old, next) };
}

/** The status `current` should have without `nodeName`'s entry. Pure. */
export function removeNodeStatus(current: object | undefined, nodeName: string, now: Date): StatusUpdate {
  const old = statusOf(current);
  if (!old.nodes?.[nodeName]) return { status: old, changed: false };
  const next = structuredClone(old);
  delete next.nodes![nodeName];
  const generation = generationOf(current);
  if (generation !== undefined && next.conditions?.some((c) => c.type === ConditionType.Programmed))
    setCondition(next, programmed(next, generation), now);
  return { status: next, changed: !sameIgnoringTimes(old, next) };
}

/** The RFC 7386 merge patch that turns `from` into `to` (undefined: no difference). */
export function mergePatchBetween(from: unknown, to: unknown): unknown {
  if (isObj(from) && isObj(to)) {
    const patch: Obj = {};
    for (const k of Object.keys(from)) if (!(k in to)) patch[k] = null;
    for (const [k, v] of Object.entries(to)) {
      const d = mergePatchBetween(from[k], v);
      if (d !== undefined) patch[k] = d;
    }
    return Object.keys(patch).length ? patch : undefined;
  }
  return isDeepStrictEqual(from, to) ? undefined : to;
}

/** The HTTP status of a failed API call (undefined: no answer, e.g. connection refused). */
function httpStatus(e: unknown): number | undefined {
  const code = isObj(e) ? e.code : undefined;
  return typeof code === 'number' ? code : undefined;
}

/** Worth another try: a conflict (re-read and recompute), throttling, a server or network error. */
const retryable = (e: unknown): boolean => {
  const code = httpStatus(e);
  return code === undefined || code === 409 || code === 429 || code >= 500;
};

const errorText = (e: unknown): string => (e instanceof Error ? e.message.split('\n')[0]! : String(e));

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
  private readonly core: CoreV1Api;
  private readonly log: Logger;
  private readonly maxRetries: number;
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly clock: Pick<Clock, 'now'>;
  /** Policies this node has an entry in (as far as it knows), by `ns/name`. */
  private readonly reported = new Map<string, Reported>();
  /** The last Event posted per policy: `uid/generation/reason/message`. */
  private readonly lastEvent = new Map<string, string>();
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly opts: PolicyStatusWriterOptions) {
    this.custom = opts.kubeConfig.makeApiClient(CustomObjectsApi);
    this.core = opts.kubeConfig.makeApiClient(CoreV1Api);
    this.log = opts.log ?? silentLogger;
    this.maxRetries = opts.maxRetries ?? 5;
    this.sleep = opts.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
    this.clock = opts.clock ?? systemClock;
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
        this.lastEvent.delete(key);
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
      this.lastEvent.delete(key);
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
        if (attempt >= this.maxRetries || !retryable(e)) throw e;
        if (httpStatus(e) !== 409)
          this.log.debug('ProxyPolicy status write failed; retrying', {
            policy: `${namespace}/${name}`,
            error: errorText(e),
          });
        await this.sleep(backoffMs(attempt));
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
    const id = [o.after.metadata.uid, is.observedGeneration, is.reason, is.message].join('/');
    if (this.lastEvent.get(key) === id) return;
    const [namespace, name] = key.split('/') as [string, string];
    const now = new Date(this.clock.now());
    const event = (): CoreV1Event => ({
      // As client-go names them, plus randomness: nodes may post about one policy at once.
      metadata: {
        name: `${name.slice(0, 200)}.${now.getTime().toString(16)}${randomBytes(4).toString('hex')}`,
        namespace,
      },
      involvedObject: {
        apiVersion: API_VERSION,
        kind: KIND,
        namespace,
        name,
        uid: o.after.metadata.uid,
        resourceVersion: o.after.metadata.resourceVersion,
      },
      type: 'Warning',
      reason: is.reason,
      message: is.message,
      source: { component: COMPONENT, host: this.opts.nodeName },
      reportingComponent: COMPONENT,
      reportingInstance: this.opts.nodeName,
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
    });
    for (let attempt = 0; ; attempt++) {
      try {
        await this.core.createNamespacedEvent({ namespace, body: event() });
        this.lastEvent.set(key, id);
        return;
      } catch (e) {
        if (attempt >= this.maxRetries || !retryable(e)) {
          this.log.warn('could not post ProxyPolicy Event', {
            policy: key,
            reason: is.reason,
            error: errorText(e),
          });
          return;
        }
        await this.sleep(backoffMs(attempt));
      }
    }
  }
}

/** 100 ms doubling to 2 s, with jitter so that racing writers fall apart. */
function backoffMs(attempt: number): number {
  return Math.min(100 * 2 ** attempt, 2000) * (0.5 + Math.random() / 2);
}
