/**
 * ProxyPolicy status, computed: what a policy's status should be after one node's result,
 * from the status as read. Pure; policy-status-writer.ts reads, writes and retries.
 *
 * Each node owns one entry, `status.nodes.<nodeName>`: whether its last sync put the policy's
 * rules in the kernel. The node-independent parts (observedGeneration, servicesSelected, the
 * Accepted and Programmed conditions) are recomputed from the object by whichever node
 * writes. See docs/proxypolicy-status.md.
 */
import { isDeepStrictEqual } from 'node:util';
import { ConditionType, type PolicyProblem, Reason } from '../api/types.js';

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
export function statusOf(current: object | undefined): ProxyPolicyStatus {
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
