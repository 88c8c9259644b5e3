/**
 * ProxyPolicy (`proxypolicies.nftproxy.dev`, v1alpha1): per-service behaviour that cluster
 * operators set with `kubectl apply`. These are the validated, defaulted shapes the compiler
 * reads; `src/api/validate.ts` turns untrusted objects into them with the rules of the model
 * (`src/api/model.ts`), from which `crds/` is generated. See docs/proxypolicy.md.
 */

export const GROUP = 'nftproxy.dev';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;
export const KIND = 'ProxyPolicy';
export const PLURAL = 'proxypolicies';

/** How a backend is chosen for a new connection. */
export const Scheduler = {
  /** Uniformly at random (`numgen random`). The default, as kube-proxy. */
  random: 'random',
  /** In turn (`numgen inc`); the counter is shared by services with the same endpoint count. */
  roundRobin: 'roundRobin',
  /** By client address (`jhash saddr mod N`): one client, one backend, while N is unchanged. */
  sourceHash: 'sourceHash',
  /** At random, in proportion to per-endpoint weights. */
  weighted: 'weighted',
  /** Maglev consistent hashing of the client address: removing one of N remaps about 1/N. */
  maglev: 'maglev',
} as const;
export type Scheduler = (typeof Scheduler)[keyof typeof Scheduler];

/** Whether traffic to selected services is masqueraded (SNAT to the node). */
export const Masquerade = {
  /** As Kubernetes decides (external traffic with policy Cluster, off-cluster sources). */
  auto: 'auto',
  /** Always: every connection to the service, also from pods. */
  always: 'always',
  /** Never (except hairpin, a pod reaching itself, which cannot work without it). */
  never: 'never',
} as const;
export type Masquerade = (typeof Masquerade)[keyof typeof Masquerade];

/** One requirement of a label selector. */
export interface MatchExpression {
  key: string;
  operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';
  /** With In and NotIn (not empty then); absent with the others. */
  values?: string[];
}

/** Label selector (the Kubernetes `LabelSelector`). */
export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: MatchExpression[];
}

/** The services a policy selects: by name or by label, one of the two. */
export type ServiceSelection =
  | { serviceNames: string[]; serviceSelector?: never }
  | { serviceSelector: LabelSelector; serviceNames?: never };

/**
 * Which endpoints a weight rule applies to: exactly one of these. `targetRef` matches the
 * endpoint's target object (normally its Pod) by name.
 */
export type WeightMatch =
  | { zone: string; node?: never; hostname?: never; targetRef?: never }
  | { node: string; zone?: never; hostname?: never; targetRef?: never }
  | { hostname: string; zone?: never; node?: never; targetRef?: never }
  | { targetRef: string; zone?: never; node?: never; hostname?: never };

/** A weight for the endpoints a rule matches. The first matching rule wins. */
export interface WeightRule {
  match: WeightMatch;
  /** 0 (no new connections) to 100. */
  weight: number;
}

/** How a backend is chosen, by type, with what each type takes (defaults applied). */
export type SchedulerSpec =
  | { type: typeof Scheduler.random | typeof Scheduler.roundRobin | typeof Scheduler.sourceHash }
  | {
      type: typeof Scheduler.weighted;
      weights: WeightRule[];
      /** Weight of endpoints no rule matches (default 1). */
      defaultWeight: number;
    }
  | {
      type: typeof Scheduler.maglev;
      /** The lookup table size, a prime (default 251). */
      tableSize: number;
    };

/** Session affinity, by type (timeout default 10800 s). */
export type SessionAffinitySpec = { type: 'None' } | { type: 'ClientIP'; timeoutSeconds: number };

/** The validated spec of a ProxyPolicy, with defaults applied. */
export interface ProxyPolicySpec {
  selector: ServiceSelection;
  scheduler: SchedulerSpec;
  /** Overrides the service's own `spec.sessionAffinity` when set. */
  sessionAffinity?: SessionAffinitySpec;
  masquerade: Masquerade;
  /**
   * Source filtering of external traffic (NodePorts, external IPs, load balancer IPs), new
   * connections only, before DNAT. With `allow`, only those sources; `deny` always wins.
   * Canonical CIDRs.
   */
  sourceRanges?: { allow?: string[]; deny?: string[] };
}

/** A validated ProxyPolicy. */
export interface ProxyPolicy {
  metadata: {
    namespace: string;
    name: string;
    uid?: string;
    generation: number;
    resourceVersion?: string;
    /** RFC 3339; orders conflicting policies (older wins). */
    creationTimestamp?: string;
    labels: Record<string, string>;
  };
  spec: ProxyPolicySpec;
}

/**
 * A ProxyPolicy as the proxy holds it: valid (with its spec, no problems) or not (with its
 * problems, no spec), so that invalid ones still get a status.
 */
export type PolicyObject =
  | { metadata: ProxyPolicy['metadata']; spec: ProxyPolicySpec; problems: [] }
  | { metadata: ProxyPolicy['metadata']; spec?: undefined; problems: PolicyProblem[] };

/** One problem with a ProxyPolicy: the field path (`spec.scheduler.weights[0].weight`) and why. */
export interface PolicyProblem {
  field: string;
  message: string;
}

/** Condition types of ProxyPolicy status. */
export const ConditionType = {
  /** The spec is valid and in force (it may still lose some services to older policies). */
  Accepted: 'Accepted',
  /** The rules for the selected services are in the kernel. */
  Programmed: 'Programmed',
} as const;
export type ConditionType = (typeof ConditionType)[keyof typeof ConditionType];

/** Reasons used in ProxyPolicy conditions and Events. */
export const Reason = {
  Accepted: 'Accepted',
  Invalid: 'Invalid',
  Conflicted: 'Conflicted',
  Programmed: 'Programmed',
  Pending: 'Pending',
  ProgrammingFailed: 'ProgrammingFailed',
  NoServices: 'NoServices',
} as const;
export type Reason = (typeof Reason)[keyof typeof Reason];

/** Allowed Maglev table sizes: primes, well above the endpoint counts they serve. */
export const MAGLEV_TABLE_SIZES = [251, 509, 1021, 2039, 4093] as const;
export const DEFAULT_MAGLEV_TABLE_SIZE = 251;
/** kube-proxy's default ClientIP affinity timeout (3 hours). */
export const DEFAULT_AFFINITY_TIMEOUT_SECONDS = 10800;
/** Kubernetes' limit on `sessionAffinityConfig.clientIP.timeoutSeconds` (one day). */
export const MAX_AFFINITY_TIMEOUT_SECONDS = 86400;
export const MAX_WEIGHT = 100;
/** The weight of endpoints that no rule matches, with `weighted`, unless `defaultWeight` says. */
export const DEFAULT_WEIGHT = 1;
/** Limits that keep one policy's elements bounded. */
export const MAX_RANGES = 256;
export const MAX_WEIGHT_RULES = 64;
export const MAX_SERVICE_NAMES = 256;
