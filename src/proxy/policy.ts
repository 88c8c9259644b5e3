/**
 * ProxyPolicy in the compiler: what the governing policy (api/select.ts picks it) changes for
 * a service, and how a scheduler becomes slots of the shared backends map. Pure.
 */
import { createHash } from 'node:crypto';
import {
  DEFAULT_MAGLEV_TABLE_SIZE,
  DEFAULT_WEIGHT,
  type Masquerade,
  type PolicyObject,
  type Scheduler,
  type WeightMatch,
} from '../api/types.js';
import type { Service } from '../k8s/types.js';
import type { Backend } from './endpoints.js';
import type { SchedulerName } from './names.js';

/** What a service's own spec and its policy make of it. */
export interface ServiceBehaviour {
  scheduler: Scheduler;
  /** Seconds of ClientIP affinity; undefined without affinity. */
  affinityTimeout?: number;
  masquerade: Masquerade;
  /** Allowed sources of external traffic (canonical CIDRs); undefined: no allow list. */
  allow?: string[];
  /** Refused sources of external traffic. */
  deny: string[];
  /** `namespace/name` of the governing policy. */
  policy?: string;
  /** The governing policy's spec, for weights and table sizes. */
  spec?: PolicyObject['spec'];
}

/** The behaviour of a service under a (valid, winning) policy or none. */
export function serviceBehaviour(svc: Service, policy?: PolicyObject): ServiceBehaviour {
  const spec = policy?.spec;
  const affinity = spec?.sessionAffinity ?? {
    type: svc.sessionAffinity,
    timeoutSeconds: svc.sessionAffinityTimeoutSeconds,
  };
  const b: ServiceBehaviour = {
    scheduler: spec?.scheduler.type ?? 'random',
    masquerade: spec?.masquerade ?? 'auto',
    deny: spec?.sourceRanges?.deny ?? [],
  };
  if (affinity.type === 'ClientIP')
    b.affinityTimeout = affinity.timeoutSeconds ?? svc.sessionAffinityTimeoutSeconds;
  if (spec?.sourceRanges?.allow?.length) b.allow = spec.sourceRanges.allow;
  if (policy && spec) {
    b.policy = `${policy.metadata.namespace}/${policy.metadata.name}`;
    b.spec = spec;
  }
  return b;
}

/** Slots of one pick: which pick chain draws, and the backend in each slot. */
export interface SlotTable {
  scheduler: SchedulerName;
  slots: Backend[];
}

/**
 * Weighted slot counts above this are apportioned into exactly this many slots (largest
 * remainder, under 1% error each), so weighted services share one pick chain size instead
 * of creating a chain, and replacing the table (nft 1.0.6), for every new weight sum.
 */
export const WEIGHTED_SLOTS = 100;

function weightOf(b: Backend, rules: { match: WeightMatch; weight: number }[], dflt: number): number {
  for (const { match, weight } of rules) {
    if (match.zone !== undefined && b.zone === match.zone) return weight;
    if (match.node !== undefined && b.nodeName === match.node) return weight;
    if (match.hostname !== undefined && b.hostname === match.hostname) return weight;
    if (match.targetRef !== undefined && b.targetName === match.targetRef) return weight;
  }
  return dflt;
}

const gcd = (a: number, b: number): number => (b ? gcd(b, a % b) : a);

/**
 * Slot counts per backend for weights: exact when the reduced weights sum to at most the
 * number of pre-created pick chains, else apportioned into WEIGHTED_SLOTS.
 */
export function weightedCounts(weights: number[], exactUpTo: number): number[] {
  const g = weights.reduce((a, w) => gcd(a, w), 0);
  if (!g) return weights.map(() => 0);
  const reduced = weights.map((w) => w / g);
  const sum = reduced.reduce((a, w) => a + w, 0);
  if (sum <= exactUpTo) return reduced;
  const quotas = weights.map((w) => (w * WEIGHTED_SLOTS) / (sum * g));
  const counts = quotas.map((q, i) => (weights[i]! > 0 ? Math.max(1, Math.floor(q)) : 0));
  let left = WEIGHTED_SLOTS - counts.reduce((a, c) => a + c, 0);
  const order = quotas.map((q, i) => ({ i, r: q - Math.floor(q) })).sort((x, y) => y.r - x.r || x.i - y.i);
  for (let k = 0; left > 0; k = (k + 1) % order.length) {
    const { i } = order[k]!;
    if (weights[i]! > 0) {
      counts[i]!++;
      left--;
    }
  }
  // Raising tiny weights to one slot may overshoot: take back from the largest.
  while (left < 0) {
    let max = 0;
    for (let i = 1; i < counts.length; i++) if (counts[i]! > counts[max]!) max = i;
    counts[max]!--;
    left++;
  }
  return counts;
}

function hash32(s: string, salt: string): [number, number] {
  const d = createHash('sha256').update(salt).update(s).digest();
  return [d.readUInt32BE(0), d.readUInt32BE(4)];
}

/**
 * The Maglev lookup table (Eisenbud et al., NSDI 2016): each backend walks its own
 * permutation of the M slots (offset and skip from hashes of its address) and takes the next
 * free slot in turn, so each gets M/N slots and removing one backend moves only the slots it
 * held, plus a few. Returns the backend index of each slot.
 */
export function maglevTable(names: string[], size: number): number[] {
  const n = names.length;
  const table = new Array<number>(size).fill(-1);
  if (!n) return [];
  const perm = names.map((name) => {
    const [h1, h2] = hash32(name, 'maglev');
    return { offset: h1 % size, skip: (h2 % (size - 1)) + 1, next: 0 };
  });
  let filled = 0;
  for (;;) {
    for (let i = 0; i < n; i++) {
      const p = perm[i]!;
      let c = (p.offset + p.next * p.skip) % size;
      while (table[c]! >= 0) {
        p.next++;
        c = (p.offset + p.next * p.skip) % size;
      }
      table[c] = i;
      p.next++;
      if (++filled === size) return table;
    }
  }
}

/**
 * The slot table of a pick among `backends` (sorted) under a behaviour. `exactUpTo`: pick
 * chain sizes that exist anyway. An empty table means no backend may take new connections
 * (all weights 0).
 */
export function slotTable(backends: Backend[], b: ServiceBehaviour, exactUpTo: number): SlotTable {
  switch (b.scheduler) {
    case 'roundRobin':
      return { scheduler: 'inc', slots: backends };
    case 'sourceHash':
      return { scheduler: 'hash', slots: backends };
    case 'maglev': {
      if (!backends.length) return { scheduler: 'hash', slots: [] };
      const s = b.spec?.scheduler;
      const size = s?.type === 'maglev' ? s.tableSize : DEFAULT_MAGLEV_TABLE_SIZE;
      const table = maglevTable(
        backends.map((x) => `${x.ip}|${x.port}`),
        size,
      );
      return { scheduler: 'hash', slots: table.map((i) => backends[i]!) };
    }
    case 'weighted': {
      const s = b.spec?.scheduler;
      const rules = s?.type === 'weighted' ? s.weights : [];
      const dflt = s?.type === 'weighted' ? s.defaultWeight : DEFAULT_WEIGHT;
      const counts = weightedCounts(
        backends.map((x) => weightOf(x, rules, dflt)),
        exactUpTo,
      );
      return { scheduler: 'random', slots: backends.flatMap((x, i) => Array<Backend>(counts[i]!).fill(x)) };
    }
    default:
      return { scheduler: 'random', slots: backends };
  }
}
