/**
 * ProxyPolicy validation: an untrusted object in, a defaulted `ProxyPolicy` or every problem out.
 * The rules are the CRD's (crds/proxypolicies.nftproxy.dev.yaml), which the API server applies;
 * test/api/crd.test.ts runs the fixtures, the samples and random mutations of them through both
 * and checks that they agree. Change one, change the other.
 *
 * The steps are the API server's: read the object as JSON (a null field is an absent one),
 * drop what is not ours to check (status, ObjectMeta fields other than the ones below), apply
 * defaults, reject unknown fields, validate. Then nftproxy applies the defaults that depend on
 * another field, which OpenAPI cannot state (`defaultWeight`, `tableSize`, `timeoutSeconds`).
 */
import 'reflect-metadata';
import { plainToInstance, Transform, Type } from 'class-transformer';
import {
  IsOptional,
  ValidateBy,
  ValidateIf,
  ValidateNested,
  validateSync,
  type ValidationError,
} from 'class-validator';
import { formatCIDR, formatIP, parseCIDR, parseIP } from '../net/ip.js';
import {
  API_VERSION,
  DEFAULT_AFFINITY_TIMEOUT_SECONDS,
  DEFAULT_MAGLEV_TABLE_SIZE,
  DEFAULT_WEIGHT,
  KIND,
  MAGLEV_TABLE_SIZES,
  MAX_AFFINITY_TIMEOUT_SECONDS,
  MAX_RANGES,
  MAX_SERVICE_NAMES,
  MAX_WEIGHT,
  MAX_WEIGHT_RULES,
  Masquerade,
  Scheduler,
  type LabelSelector,
  type PolicyProblem,
  type ProxyPolicy,
  type ProxyPolicySpec,
  type WeightMatch,
} from './types.js';

/** The patterns the CRD uses too (the test checks they are the same strings). */
export const Patterns = {
  /** A Service name: lower case letters, digits and '-', starting with a letter (DNS-1035 label). */
  dns1035Label: '^[a-z]([-a-z0-9]*[a-z0-9])?$',
  /** A namespace or hostname: lower case letters, digits and '-' (DNS-1123 label). */
  dns1123Label: '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$',
  /** An object or node name: DNS-1123 labels joined by '.'. */
  dns1123Subdomain: '^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$',
  /** A label key: a name of at most 63 characters, optionally after a DNS subdomain and '/'. */
  labelKey:
    '^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$',
  /** A label value: empty, or at most 63 letters, digits, '-', '_' and '.', alphanumeric at both ends. */
  labelValue: '^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$',
} as const;

/** Lengths that go with the patterns. */
const MAX_LABEL = 63;
const MAX_SUBDOMAIN = 253;
const MAX_LABEL_KEY = MAX_SUBDOMAIN + 1 + MAX_LABEL;
/** The longest text a valid CIDR can have (`0000:...:0000:255.255.255.255/128`). */
const MAX_CIDR_TEXT = 49;
/** Limits of a label selector. */
const MAX_MATCH_LABELS = 64;
const MAX_MATCH_EXPRESSIONS = 64;
const MAX_MATCH_VALUES = 64;
/** Deeper than this, an object cannot be a ProxyPolicy: stop before the stack does. */
const MAX_DEPTH = 32;

/** One line per problem: `spec.scheduler.weights[1].weight: must be from 0 to 100, not 101`. */
export function formatProblem(p: PolicyProblem): string {
  return `${p.field}: ${p.message}`;
}

// ---------------------------------------------------------------------------------------------
// Messages

/** A bad value as messages show it: strings quoted, long ones cut. */
function show(v: unknown): string {
  if (Array.isArray(v)) return 'a list';
  if (v instanceof Map || (typeof v === 'object' && v !== null)) return 'an object';
  if (v === undefined) return 'nothing';
  const text = JSON.stringify(v) ?? String(v);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

/** Findings below a property (list items, map entries), as `[suffix, message]`; '' is the property. */
type Findings = [suffix: string, message: string][];
type Finding = string | Findings | undefined;
/** Marks a constraint message that carries `Findings`, for `flatten` to unpack. */
const FINDINGS = '\u0000';

/**
 * A property constraint from a check that returns what is wrong (or undefined). Constraints
 * named `required` and `type` hide the others of their property, and the fields below it.
 */
function Check(name: string, check: (value: unknown, object: Record<string, unknown>) => Finding) {
  const run = (value: unknown, object: object): Finding => {
    const f = check(value, object as Record<string, unknown>);
    return Array.isArray(f) && f.length === 0 ? undefined : f;
  };
  return ValidateBy({
    name,
    validator: {
      validate: (value: unknown, args) => run(value, args!.object) === undefined,
      defaultMessage: (args) => {
        const f = run(args!.value, args!.object);
        return typeof f === 'string' ? f : FINDINGS + JSON.stringify(f ?? []);
      },
    },
  });
}

// ---------------------------------------------------------------------------------------------
// Checks: each returns what is wrong with a value, or undefined.

const required =
  (what = '') =>
  (v: unknown) =>
    v === undefined ? `is required${what}` : undefined;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Map);
}

const object = (v: unknown) => (isObject(v) ? undefined : `must be an object, not ${show(v)}`);
const list = (v: unknown) => (Array.isArray(v) ? undefined : `must be a list, not ${show(v)}`);

function integer(min: number, max: number) {
  return (v: unknown) =>
    Number.isInteger(v) && (v as number) >= min && (v as number) <= max
      ? undefined
      : typeof v === 'number' && Number.isInteger(v)
        ? `must be from ${min} to ${max}, not ${v}`
        : `must be an integer, not ${show(v)}`;
}

function oneOf(values: readonly (string | number)[]) {
  return (v: unknown) =>
    values.includes(v as string | number)
      ? undefined
      : `must be one of ${values.map((x) => JSON.stringify(x)).join(', ')}; not ${show(v)}`;
}

/** A string of at most `max` characters (code points, as Kubernetes counts) matching `pattern`. */
function text(opts: { max: number; min?: number; pattern?: string; what?: string }) {
  const re = opts.pattern === undefined ? undefined : new RegExp(opts.pattern);
  return (v: unknown): string | undefined => {
    if (typeof v !== 'string') return `must be a string, not ${show(v)}`;
    const n = [...v].length;
    if (n > opts.max) return `must be at most ${opts.max} characters, not ${n}: ${show(v)}`;
    if (n < (opts.min ?? 0)) return `must not be empty`;
    if (re && !re.test(v)) return `not a valid ${opts.what}: ${show(v)}`;
    return undefined;
  };
}

const serviceName = text({
  max: MAX_LABEL,
  pattern: Patterns.dns1035Label,
  what: "Service name (lower case letters, digits and '-', starting with a letter)",
});
const dnsLabel = text({
  max: MAX_LABEL,
  pattern: Patterns.dns1123Label,
  what: "DNS label (lower case letters, digits and '-')",
});
const dnsSubdomain = text({
  max: MAX_SUBDOMAIN,
  pattern: Patterns.dns1123Subdomain,
  what: "DNS subdomain (lower case letters, digits, '-' and '.')",
});
const labelValue = text({
  max: MAX_LABEL,
  pattern: Patterns.labelValue,
  what: "label value (letters, digits, '-', '_' and '.', alphanumeric at both ends)",
});
const labelKeyText = text({
  max: MAX_LABEL_KEY,
  pattern: Patterns.labelKey,
  what: "label key (a name of at most 63 characters, optionally after a DNS subdomain and '/')",
});
function labelKey(v: unknown): string | undefined {
  const bad = labelKeyText(v);
  if (bad) return bad;
  const slash = (v as string).indexOf('/');
  return slash > MAX_SUBDOMAIN
    ? `the prefix of a label key must be at most 253 characters: ${show(v)}`
    : undefined;
}

/** A CIDR as Kubernetes' `isCIDR` takes it, with host bits clear. */
function cidr(v: unknown): string | undefined {
  const bad = text({ max: MAX_CIDR_TEXT })(v);
  if (bad) return bad;
  const s = v as string;
  const addr = parseIP(s.slice(0, s.indexOf('/')));
  const net = parseCIDR(s);
  if (!addr || !net) return `not a valid CIDR: ${show(s)}`;
  const b = addr.bytes;
  if (addr.version === 6 && b.slice(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff)
    return `not a valid CIDR: ${show(s)} (IPv4-mapped IPv6 addresses are not allowed)`;
  if (formatIP(addr) !== formatIP(net))
    return `host bits set in ${show(s)}: the network is ${formatCIDR(net)}`;
  return undefined;
}

/** RFC 3339, as Kubernetes writes timestamps. */
function dateTime(v: unknown): string | undefined {
  const ok =
    typeof v === 'string' &&
    /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/.test(v) &&
    !Number.isNaN(Date.parse(v));
  return ok ? undefined : `must be an RFC 3339 date-time, not ${show(v)}`;
}

/** The items of a list (skipped if `v` is not one: `list` says so). */
function items(opts: {
  min?: number;
  max: number;
  unique?: boolean;
  each: (v: unknown) => string | undefined;
}) {
  return (v: unknown): Findings => {
    if (!Array.isArray(v)) return [];
    const found: Findings = [];
    if (v.length < (opts.min ?? 0)) found.push(['', 'must not be empty']);
    if (v.length > opts.max) found.push(['', `must have at most ${opts.max} items, not ${v.length}`]);
    v.forEach((item, i) => {
      const bad = opts.each(item);
      if (bad) found.push([`[${i}]`, bad]);
      else if (opts.unique && v.indexOf(item) < i) found.push([`[${i}]`, `duplicate value ${show(item)}`]);
    });
    return found;
  };
}

/** A label map (an object at a `LABEL_MAPS` path, which `readJSON` turns into a Map). */
function labels(max: number) {
  return (v: unknown): Finding => {
    if (!(v instanceof Map)) return `must be an object, not ${show(v)}`;
    const found: Findings = [];
    if (v.size > max) found.push(['', `must have at most ${max} labels, not ${v.size}`]);
    for (const [key, value] of v as Map<string, unknown>) {
      const bad = labelKey(key) ?? labelValue(value);
      if (bad) found.push([`[${key}]`, bad]);
    }
    return found;
  };
}

/** Exactly one of `keys` is set in an object value. */
function exactlyOne(keys: string[]) {
  return (v: unknown) => {
    if (!isObject(v)) return undefined; // `object` says so
    const set = keys.filter((k) => v[k] !== undefined);
    if (set.length === 1) return undefined;
    const names = `${keys.slice(0, -1).join(', ')} and ${keys.at(-1)}`;
    return `exactly one of ${names} must be set, not ${set.length === 0 ? 'none' : set.join(' and ')}`;
  };
}

/**
 * The property may be set only when the object's `field` is `value`. Not checked while `field`
 * is none of `known`: its own problem is the one to fix first.
 */
function onlyWith(field: string, value: string, known: readonly string[]) {
  return (v: unknown, o: Record<string, unknown>) =>
    v === undefined || o[field] === value || !known.includes(o[field] as string)
      ? undefined
      : `is allowed only with ${field} ${value}, not with ${show(o[field])}`;
}

// ---------------------------------------------------------------------------------------------
// The object, as class-validator classes. Properties are `unknown` until validated.

/** Keeps the value as `readJSON` made it: class-transformer would empty a label Map. */
const AsIs = () => Transform(({ obj, key }) => (obj as Record<string, unknown>)[key]);

const SCHEDULERS = Object.values(Scheduler);
const AFFINITIES = ['None', 'ClientIP'] as const;
const OPERATORS = ['In', 'NotIn', 'Exists', 'DoesNotExist'] as const;
const needsValues = (operator: unknown) => operator === 'In' || operator === 'NotIn';

class MatchExpressionDoc {
  @Check('required', required())
  @Check('type', labelKey)
  key?: unknown;

  @Check('required', required())
  @Check('type', oneOf(OPERATORS))
  operator?: unknown;

  @ValidateIf((o: MatchExpressionDoc) => o.values !== undefined || needsValues(o.operator))
  @Check('required', required(' with operator In and NotIn'))
  @Check('type', list)
  @Check('items', items({ max: MAX_MATCH_VALUES, each: labelValue }))
  @Check('operator', (v, o) => {
    const n = Array.isArray(v) ? v.length : 0;
    if (needsValues(o.operator) && n === 0) return `must not be empty with operator ${o.operator}`;
    if (OPERATORS.includes(o.operator as never) && !needsValues(o.operator) && n > 0)
      return `must be empty with operator ${o.operator}`;
    return undefined;
  })
  values?: unknown;
}

class LabelSelectorDoc {
  @IsOptional()
  @Check('type', labels(MAX_MATCH_LABELS))
  @AsIs()
  matchLabels?: unknown;

  @IsOptional()
  @Check('type', list)
  @Check('items', items({ max: MAX_MATCH_EXPRESSIONS, each: object }))
  @ValidateNested({ each: true })
  @Type(() => MatchExpressionDoc)
  matchExpressions?: unknown;
}

class SelectorDoc {
  @IsOptional()
  @Check('type', list)
  @Check('items', items({ min: 1, max: MAX_SERVICE_NAMES, unique: true, each: serviceName }))
  serviceNames?: unknown;

  @IsOptional()
  @Check('type', object)
  @ValidateNested()
  @Type(() => LabelSelectorDoc)
  serviceSelector?: unknown;
}

class WeightMatchDoc {
  @IsOptional()
  @Check('type', text({ min: 1, max: MAX_LABEL, pattern: Patterns.labelValue, what: 'zone (a label value)' }))
  zone?: unknown;

  @IsOptional()
  @Check('type', dnsSubdomain)
  node?: unknown;

  @IsOptional()
  @Check('type', dnsLabel)
  hostname?: unknown;

  @IsOptional()
  @Check('type', dnsSubdomain)
  targetRef?: unknown;
}

class WeightRuleDoc {
  @Check('required', required())
  @Check('type', object)
  @Check('exactlyOne', exactlyOne(['zone', 'node', 'hostname', 'targetRef']))
  @ValidateNested()
  @Type(() => WeightMatchDoc)
  match?: unknown;

  @Check('required', required())
  @Check('type', integer(0, MAX_WEIGHT))
  weight?: unknown;
}

class SchedulerDoc {
  @Check('type', oneOf(SCHEDULERS))
  type: unknown = Scheduler.random;

  @ValidateIf((o: SchedulerDoc) => o.weights !== undefined || o.type === Scheduler.weighted)
  @Check('required', required(' with type weighted'))
  @Check('type', list)
  @Check('items', items({ min: 1, max: MAX_WEIGHT_RULES, each: object }))
  @Check('forbidden', onlyWith('type', Scheduler.weighted, SCHEDULERS))
  @ValidateNested({ each: true })
  @Type(() => WeightRuleDoc)
  weights?: unknown;

  @IsOptional()
  @Check('type', integer(0, MAX_WEIGHT))
  @Check('forbidden', onlyWith('type', Scheduler.weighted, SCHEDULERS))
  defaultWeight?: unknown;

  @IsOptional()
  @Check('type', oneOf(MAGLEV_TABLE_SIZES))
  @Check('forbidden', onlyWith('type', Scheduler.maglev, SCHEDULERS))
  tableSize?: unknown;
}

class SessionAffinityDoc {
  @Check('required', required())
  @Check('type', oneOf(AFFINITIES))
  type?: unknown;

  @IsOptional()
  @Check('type', integer(1, MAX_AFFINITY_TIMEOUT_SECONDS))
  @Check('forbidden', onlyWith('type', 'ClientIP', AFFINITIES))
  timeoutSeconds?: unknown;
}

class SourceRangesDoc {
  @IsOptional()
  @Check('type', list)
  @Check('items', items({ max: MAX_RANGES, unique: true, each: cidr }))
  allow?: unknown;

  @IsOptional()
  @Check('type', list)
  @Check('items', items({ max: MAX_RANGES, unique: true, each: cidr }))
  deny?: unknown;
}

const nonEmptyList = (v: unknown) => Array.isArray(v) && v.length > 0;

class SpecDoc {
  @Check('required', required())
  @Check('type', object)
  @Check('exactlyOne', exactlyOne(['serviceNames', 'serviceSelector']))
  @ValidateNested()
  @Type(() => SelectorDoc)
  selector?: unknown;

  @Check('type', object)
  @ValidateNested()
  @Type(() => SchedulerDoc)
  scheduler: unknown = new SchedulerDoc();

  @IsOptional()
  @Check('type', object)
  @ValidateNested()
  @Type(() => SessionAffinityDoc)
  sessionAffinity?: unknown;

  @Check('type', oneOf(Object.values(Masquerade)))
  masquerade: unknown = Masquerade.auto;

  @IsOptional()
  @Check('type', object)
  @Check('empty', (v) =>
    isObject(v) && !nonEmptyList(v.allow) && !nonEmptyList(v.deny)
      ? 'at least one of allow and deny must be non-empty'
      : undefined,
  )
  @ValidateNested()
  @Type(() => SourceRangesDoc)
  sourceRanges?: unknown;
}

class MetadataDoc {
  @Check('required', required())
  @Check('type', dnsSubdomain)
  name?: unknown;

  @Check('required', required())
  @Check('type', dnsLabel)
  namespace?: unknown;

  @IsOptional()
  @Check('type', text({ max: Infinity }))
  uid?: unknown;

  @Check('type', integer(0, Number.MAX_SAFE_INTEGER))
  generation: unknown = 1;

  @IsOptional()
  @Check('type', text({ max: Infinity }))
  resourceVersion?: unknown;

  @IsOptional()
  @Check('type', dateTime)
  creationTimestamp?: unknown;

  @Check('type', labels(Infinity))
  @AsIs()
  labels: unknown = new Map();
}

class ProxyPolicyDoc {
  @Check('required', required())
  @Check('type', oneOf([API_VERSION]))
  apiVersion?: unknown;

  @Check('required', required())
  @Check('type', oneOf([KIND]))
  kind?: unknown;

  @Check('required', required())
  @Check('type', object)
  @ValidateNested()
  @Type(() => MetadataDoc)
  metadata?: unknown;

  @Check('required', required())
  @Check('type', object)
  @ValidateNested()
  @Type(() => SpecDoc)
  spec?: unknown;
}

const DOCS = [
  ProxyPolicyDoc,
  MetadataDoc,
  SpecDoc,
  SelectorDoc,
  LabelSelectorDoc,
  MatchExpressionDoc,
  SchedulerDoc,
  WeightRuleDoc,
  WeightMatchDoc,
  SessionAffinityDoc,
  SourceRangesDoc,
];
const isDoc = (v: unknown) => DOCS.some((c) => v instanceof c);

// ---------------------------------------------------------------------------------------------
// Reading untrusted input as JSON

/** Where free-form string maps sit: their keys are label keys, not field names. */
const LABEL_MAPS = new Set(['metadata.labels', 'spec.selector.serviceSelector.matchLabels']);
/** The ObjectMeta fields nftproxy reads; the others (annotations, managedFields, ...) are not ours. */
const METADATA_FIELDS = new Set([
  'name',
  'namespace',
  'uid',
  'generation',
  'resourceVersion',
  'creationTimestamp',
  'labels',
]);

const join = (path: string, key: string) => (path ? `${path}.${key}` : key);

/**
 * A copy of `v` that is plain JSON, label maps as Maps (their null values dropped). Reports
 * what JSON cannot hold, what cannot be read (a throwing getter or Proxy), and keys that
 * class-transformer would silently skip or trip on (`__proto__`, `constructor`, `toString`,
 * ...: none is a field of ours, so each is an unknown field). Returns undefined for a value it
 * dropped. Never throws.
 */
function readJSON(v: unknown, path: string, problems: PolicyProblem[], above: object[] = []): unknown {
  const bad = (message: string, at = path) => {
    problems.push({ field: at || '<root>', message });
    return undefined;
  };
  const unreadable = (e: unknown, at = path) =>
    bad(`could not be read: ${(e as Error)?.message ?? String(e)}`, at);
  if (v === null || typeof v === 'string' || typeof v === 'boolean') return v;
  if (typeof v === 'number') return Number.isFinite(v) ? v : bad(`not a JSON number: ${String(v)}`);
  if (typeof v !== 'object') return bad(`not a JSON value: a ${typeof v}`);
  if (above.includes(v)) return bad('contains itself');
  if (above.length >= MAX_DEPTH) return bad(`nested more than ${MAX_DEPTH} deep`);
  const inner = [...above, v];
  let keys: string[];
  try {
    if (v instanceof Date) return Number.isNaN(v.getTime()) ? bad('not a valid date') : v.toISOString();
    const proto = Object.getPrototypeOf(v) as unknown;
    if (!Array.isArray(v) && proto !== Object.prototype && proto !== null)
      return bad('not a JSON value: an object of a class');
    keys = Array.isArray(v) ? [] : Object.keys(v);
    if (Array.isArray(v)) {
      return Array.from({ length: v.length }, (_, i) => {
        const at = `${path}[${i}]`;
        let item: unknown;
        try {
          item = v[i] as unknown;
        } catch (e) {
          return unreadable(e, at) ?? null;
        }
        return readJSON(item, at, problems, inner) ?? null;
      });
    }
  } catch (e) {
    return unreadable(e);
  }
  const labelMap = LABEL_MAPS.has(path);
  const out = labelMap ? new Map<string, unknown>() : ({} as Record<string, unknown>);
  for (const key of keys) {
    if (path === '' && key === 'status') continue; // set through the status subresource only
    if (path === 'metadata' && !METADATA_FIELDS.has(key)) continue;
    const at = labelMap ? `${path}[${key}]` : join(path, key);
    if (!labelMap && (key === '__proto__' || key in Object.prototype)) {
      bad('unknown field', at);
      continue;
    }
    let raw: unknown;
    try {
      raw = (v as Record<string, unknown>)[key];
    } catch (e) {
      unreadable(e, at);
      continue;
    }
    const value = readJSON(raw, at, problems, inner);
    if (value === undefined) continue;
    if (out instanceof Map) {
      if (value !== null) out.set(key, value);
    } else out[key] = value; // a null field is absent if known (`absentNulls`), else unknown
  }
  return out;
}

/**
 * A known field set to null is an absent one, as the API server prunes it (so it gets its
 * default); an unknown one stays, for the whitelist to report. Declared fields are own
 * properties of every instance (ES2022 class fields), set or not.
 */
function absentNulls(doc: object): void {
  const fresh = new (doc.constructor as new () => Record<string, unknown>)();
  for (const [key, value] of Object.entries(doc)) {
    if (value === null && key in fresh) (doc as Record<string, unknown>)[key] = fresh[key];
    for (const x of Array.isArray(value) ? value : [value]) if (isDoc(x)) absentNulls(x as object);
  }
}

// ---------------------------------------------------------------------------------------------
// class-validator's errors as problems

/** Constraints that only restate what ours say better. */
const NOISE = new Set(['nestedValidation', 'unknownValue']);
const PRIMARY = ['required', 'type'];

function flatten(errors: ValidationError[], path: string, inList: boolean, out: PolicyProblem[]): void {
  for (const e of errors) {
    const at = inList ? `${path}[${e.property}]` : join(path, e.property);
    const constraints = Object.entries(e.constraints ?? {}).filter(([name]) => !NOISE.has(name));
    const primary = PRIMARY.map((p) => constraints.find(([name]) => name === p)).find((c) => c);
    for (const [name, message] of primary ? [primary] : constraints) {
      if (name === 'whitelistValidation') out.push({ field: at, message: 'unknown field' });
      else if (message.startsWith(FINDINGS)) {
        for (const [suffix, m] of JSON.parse(message.slice(FINDINGS.length)) as Findings)
          out.push({ field: at + suffix, message: m });
      } else out.push({ field: at, message });
    }
    // Below a list, only items that are objects of ours: `list` and `items` speak for the rest.
    if (primary || !e.children?.length) continue;
    if (!inList && Array.isArray(e.value)) flatten(e.children, at, true, out);
    else if (isDoc(e.value)) flatten(e.children, at, false, out);
  }
}

// ---------------------------------------------------------------------------------------------
// The validated policy

const labelRecord = (m: unknown) => Object.fromEntries(m as Map<string, string>);

function selectorOf(d: SelectorDoc): ProxyPolicySpec['selector'] {
  if (d.serviceNames !== undefined) return { serviceNames: [...(d.serviceNames as string[])] };
  const s = d.serviceSelector as LabelSelectorDoc;
  const out: LabelSelector = {};
  if (s.matchLabels !== undefined) out.matchLabels = labelRecord(s.matchLabels);
  if (s.matchExpressions !== undefined)
    out.matchExpressions = (s.matchExpressions as MatchExpressionDoc[]).map((m) => ({
      key: m.key as string,
      operator: m.operator as 'In' | 'NotIn' | 'Exists' | 'DoesNotExist',
      ...(m.values === undefined ? {} : { values: [...(m.values as string[])] }),
    }));
  return { serviceSelector: out };
}

function schedulerOf(d: SchedulerDoc): ProxyPolicySpec['scheduler'] {
  const type = d.type as Scheduler;
  if (type === Scheduler.weighted)
    return {
      type,
      weights: (d.weights as WeightRuleDoc[]).map((w) => {
        const m = w.match as WeightMatchDoc;
        const key = (['zone', 'node', 'hostname', 'targetRef'] as const).find((k) => m[k] !== undefined)!;
        return { match: { [key]: m[key] as string } as WeightMatch, weight: w.weight as number };
      }),
      defaultWeight: (d.defaultWeight as number | undefined) ?? DEFAULT_WEIGHT,
    };
  if (type === Scheduler.maglev)
    return { type, tableSize: (d.tableSize as number | undefined) ?? DEFAULT_MAGLEV_TABLE_SIZE };
  return { type };
}

function specOf(d: SpecDoc): ProxyPolicySpec {
  const spec: ProxyPolicySpec = {
    selector: selectorOf(d.selector as SelectorDoc),
    scheduler: schedulerOf(d.scheduler as SchedulerDoc),
    masquerade: d.masquerade as Masquerade,
  };
  const a = d.sessionAffinity as SessionAffinityDoc | undefined;
  if (a)
    spec.sessionAffinity =
      a.type === 'ClientIP'
        ? {
            type: 'ClientIP',
            timeoutSeconds: (a.timeoutSeconds as number | undefined) ?? DEFAULT_AFFINITY_TIMEOUT_SECONDS,
          }
        : { type: 'None' };
  const r = d.sourceRanges as SourceRangesDoc | undefined;
  if (r) {
    const canonical = (l: unknown) => (l as string[]).map((c) => formatCIDR(parseCIDR(c)!));
    spec.sourceRanges = {};
    if (r.allow !== undefined) spec.sourceRanges.allow = canonical(r.allow);
    if (r.deny !== undefined) spec.sourceRanges.deny = canonical(r.deny);
  }
  return spec;
}

function policyOf(d: ProxyPolicyDoc): ProxyPolicy {
  const m = d.metadata as MetadataDoc;
  const metadata: ProxyPolicy['metadata'] = {
    namespace: m.namespace as string,
    name: m.name as string,
    generation: m.generation as number,
    labels: labelRecord(m.labels),
  };
  for (const k of ['uid', 'resourceVersion', 'creationTimestamp'] as const)
    if (m[k] !== undefined) metadata[k] = m[k] as string;
  return { metadata, spec: specOf(d.spec as SpecDoc) };
}

/**
 * Validates an untrusted ProxyPolicy object (as the API server or a manifest gives it) and
 * returns it defaulted, with canonical CIDRs; or, if anything is wrong, every problem with its
 * field path. `status` and ObjectMeta fields nftproxy does not read are ignored. Never throws.
 */
export function validateProxyPolicy(obj: unknown): { policy?: ProxyPolicy; problems: PolicyProblem[] } {
  const problems: PolicyProblem[] = [];
  try {
    const json = readJSON(obj, '', problems);
    if (!isObject(json)) {
      if (!problems.length)
        problems.push({ field: '<root>', message: `must be an object, not ${show(json)}` });
      return { problems };
    }
    const doc = plainToInstance(ProxyPolicyDoc, json);
    absentNulls(doc);
    const errors = validateSync(doc, {
      whitelist: true,
      forbidNonWhitelisted: true,
      forbidUnknownValues: true,
      validationError: { target: false, value: true },
    });
    // What readJSON dropped may be missed again below it ("is required"): say it once.
    const dropped = problems.map((p) => p.field);
    const found: PolicyProblem[] = [];
    flatten(errors, '', false, found);
    problems.push(...found.filter((p) => !dropped.some((d) => p.field === d || p.field.startsWith(`${d}.`))));
    if (problems.length) return { problems };
    return { policy: policyOf(doc), problems };
  } catch (e) {
    // A bug of ours, not of the input; still an answer rather than a crash of the caller.
    problems.push({
      field: '<root>',
      message: `could not be validated: ${(e as Error)?.message ?? String(e)}`,
    });
    return { problems };
  }
}
