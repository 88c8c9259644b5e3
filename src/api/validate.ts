/**
 * ProxyPolicy validation: an untrusted object in, a defaulted `ProxyPolicy` or every problem out.
 * The rules are the model's (src/api/model.ts), from which the CRD the API server applies is
 * generated; test/api/crd.test.ts runs the fixtures, the samples and random mutations of them
 * through both and checks that they agree.
 *
 * The steps are the API server's: read the object as JSON (a null field is an absent one),
 * drop what is not ours to check (status, ObjectMeta fields other than the ones below), apply
 * defaults, reject unknown fields, validate. Then nftproxy applies the defaults that depend on
 * another field, which OpenAPI cannot state (`defaultWeight`, `tableSize`, `timeoutSeconds`).
 */
import 'reflect-metadata';
import { plainToInstance } from 'class-transformer';
import {
  getMetadataStorage,
  validateSync,
  type ValidationArguments,
  type ValidationError,
} from 'class-validator';
import { formatCIDR, parseCIDR } from '../net/ip.js';
import {
  isModel,
  type LabelSelectorFields,
  type MetadataFields,
  ProxyPolicyFields,
  type SchedulerFields,
  type SelectorFields,
  show,
  type SpecFields,
  type WeightMatchFields,
} from './model.js';
import {
  DEFAULT_AFFINITY_TIMEOUT_SECONDS,
  DEFAULT_MAGLEV_TABLE_SIZE,
  DEFAULT_WEIGHT,
  type LabelSelector,
  type PolicyProblem,
  type ProxyPolicy,
  type ProxyPolicySpec,
  Scheduler,
  type WeightMatch,
} from './types.js';

export { Patterns } from './model.js';

/** Deeper than this, an object cannot be a ProxyPolicy: stop before the stack does. */
const MAX_DEPTH = 32;

/** One line per problem: `spec.scheduler.weights[1].weight: must be from 0 to 100, not 101`. */
export function formatProblem(p: PolicyProblem): string {
  return `${p.field}: ${p.message}`;
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Map);

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
    for (const x of Array.isArray(value) ? value : [value]) if (isModel(x)) absentNulls(x);
  }
}

// ---------------------------------------------------------------------------------------------
// class-validator's errors as problems

/** Constraints that only restate what others say better. */
const NOISE = new Set(['nestedValidation', 'unknownValue']);

/**
 * Which failed constraint of a field is reported, first first: requiredness, then the type,
 * then sizes, then the rest. One problem per field: the one to fix first.
 */
const PRECEDENCE = [
  'isDefined',
  'whitelistValidation',
  'isObject',
  'labelMap',
  'isArray',
  'isString',
  'isInt',
  'isIn',
  'arrayMinSize',
  'arrayMaxSize',
  'nonEmptyWith',
  'emptyUnless',
  'onlyWith',
  'min',
  'max',
  'minChars',
  'maxChars',
  'pattern',
];
/** Failures of these hide everything below the field. */
const BLOCKING = new Set([
  'isDefined',
  'whitelistValidation',
  'isObject',
  'labelMap',
  'isArray',
  'isString',
  'isInt',
  'isIn',
]);
const rank = (name: string) => {
  const i = PRECEDENCE.indexOf(name);
  return i < 0 ? PRECEDENCE.length : i;
};
const first = <T extends [string, ...unknown[]]>(xs: T[]) =>
  xs.reduce<T | undefined>(
    (best, x) => (best === undefined || rank(x[0]) < rank(best[0]) ? x : best),
    undefined,
  );

const storage = getMetadataStorage();

/**
 * class-validator reports a failed `each` constraint once, on the list (or map); the API
 * server names the items. This runs the failed constraints of a field on each of its items
 * (the same constraint instances, the same messages), and finds duplicates of a set.
 */
function itemProblems(
  e: ValidationError,
  failed: Set<string>,
  each: EachConstraint[],
): [suffix: string, message: string][] {
  const target = e.target as object;
  const value = e.value as unknown;
  if (!(Array.isArray(value) || value instanceof Map)) return [];
  const entries: [string, unknown][] = Array.isArray(value)
    ? value.map((x, i) => [`[${i}]`, x])
    : [...(value as Map<string, unknown>)].map(([k, x]) => [`[${k}]`, x]);
  const found = new Map<string, [string, string][]>();
  const add = (suffix: string, name: string, message: string) =>
    found.set(suffix, [...(found.get(suffix) ?? []), [name, message]]);
  for (const { m, c } of each) {
    if (!failed.has(c.name)) continue;
    for (const [suffix, item] of entries) {
      const args: ValidationArguments = {
        value: item,
        constraints: m.constraints,
        targetName: target.constructor.name,
        object: target,
        property: e.property,
      };
      if (c.instance.validate(item, args)) continue;
      const message =
        typeof m.message === 'function'
          ? m.message(args)
          : (m.message ?? c.instance.defaultMessage?.(args) ?? '');
      add(suffix, c.name, message);
    }
  }
  if (failed.has('arrayUnique') && Array.isArray(value))
    value.forEach((x, i) => {
      if (value.indexOf(x) < i && !found.has(`[${i}]`))
        add(`[${i}]`, 'arrayUnique', `duplicate value ${show(x)}`);
    });
  return [...found].map(([suffix, ms]) => [suffix, first(ms)![1]]);
}

function flatten(errors: ValidationError[], path: string, inList: boolean, out: PolicyProblem[]): void {
  for (const e of errors) {
    const at = inList ? `${path}[${e.property}]` : join(path, e.property);
    const failed = Object.entries(e.constraints ?? {}).filter(([name]) => !NOISE.has(name));
    const names = new Set(failed.map(([name]) => name));
    const each = eachConstraints(e);
    // Failures about the items are reported at the items (a set's duplicates too).
    const aboutItems = new Set(['arrayUnique', ...each.map(({ c }) => c.name)]);
    const own = first(failed.filter(([name]) => !aboutItems.has(name)));
    if (own && BLOCKING.has(own[0])) {
      out.push({ field: at, message: own[0] === 'whitelistValidation' ? 'unknown field' : own[1] });
      continue;
    }
    // Each item's own problem, at the item; the field's, at the field.
    for (const [suffix, message] of itemProblems(e, names, each)) out.push({ field: at + suffix, message });
    if (own) out.push({ field: at, message: own[1] });
    // Below a list, only items that are objects of ours: the list's constraints speak for the rest.
    if (!e.children?.length) continue;
    if (!inList && Array.isArray(e.value)) flatten(e.children, at, true, out);
    else if (isModel(e.value)) flatten(e.children, at, false, out);
  }
}

/** A constraint class-validator runs on every item of a field, with its metadata. */
interface EachConstraint {
  m: ReturnType<typeof storage.getTargetValidationMetadatas>[number];
  c: ReturnType<typeof storage.getTargetValidatorConstraints>[number];
}

/** The `each` constraints of the field `e` is about. */
function eachConstraints(e: ValidationError): EachConstraint[] {
  const target = e.target as object | undefined;
  if (!target) return [];
  return storage
    .getTargetValidationMetadatas(target.constructor, '', true, false)
    .filter((m) => m.propertyName === e.property && m.each && m.constraintCls)
    .flatMap((m) => storage.getTargetValidatorConstraints(m.constraintCls!).map((c) => ({ m, c })));
}

// ---------------------------------------------------------------------------------------------
// The validated policy

const labelRecord = (m: Map<string, string>) => Object.fromEntries(m);

function selectorOf(d: SelectorFields): ProxyPolicySpec['selector'] {
  if (d.serviceNames !== undefined) return { serviceNames: [...d.serviceNames] };
  const s = d.serviceSelector as LabelSelectorFields;
  const out: LabelSelector = {};
  if (s.matchLabels !== undefined) out.matchLabels = labelRecord(s.matchLabels);
  if (s.matchExpressions !== undefined)
    out.matchExpressions = s.matchExpressions.map((m) => ({
      key: m.key,
      operator: m.operator,
      ...(m.values === undefined ? {} : { values: [...m.values] }),
    }));
  return { serviceSelector: out };
}

/** The one key a valid match has. */
function weightMatchOf(m: WeightMatchFields): WeightMatch {
  if (m.zone !== undefined) return { zone: m.zone };
  if (m.node !== undefined) return { node: m.node };
  if (m.hostname !== undefined) return { hostname: m.hostname };
  return { targetRef: m.targetRef! };
}

function schedulerOf(d: SchedulerFields): ProxyPolicySpec['scheduler'] {
  switch (d.type) {
    case Scheduler.weighted:
      return {
        type: d.type,
        weights: d.weights!.map((w) => ({ match: weightMatchOf(w.match), weight: w.weight })),
        defaultWeight: d.defaultWeight ?? DEFAULT_WEIGHT,
      };
    case Scheduler.maglev:
      return { type: d.type, tableSize: d.tableSize ?? DEFAULT_MAGLEV_TABLE_SIZE };
    default:
      return { type: d.type };
  }
}

function specOf(d: SpecFields): ProxyPolicySpec {
  const spec: ProxyPolicySpec = {
    selector: selectorOf(d.selector),
    scheduler: schedulerOf(d.scheduler),
    masquerade: d.masquerade,
  };
  const a = d.sessionAffinity;
  if (a)
    spec.sessionAffinity =
      a.type === 'ClientIP'
        ? { type: 'ClientIP', timeoutSeconds: a.timeoutSeconds ?? DEFAULT_AFFINITY_TIMEOUT_SECONDS }
        : { type: 'None' };
  const r = d.sourceRanges;
  if (r) {
    const canonical = (l: string[]) => l.map((c) => formatCIDR(parseCIDR(c)!));
    spec.sourceRanges = {};
    if (r.allow !== undefined) spec.sourceRanges.allow = canonical(r.allow);
    if (r.deny !== undefined) spec.sourceRanges.deny = canonical(r.deny);
  }
  return spec;
}

function policyOf(d: ProxyPolicyFields): ProxyPolicy {
  const m: MetadataFields = d.metadata;
  const metadata: ProxyPolicy['metadata'] = {
    namespace: m.namespace,
    name: m.name,
    generation: m.generation,
    labels: labelRecord(m.labels),
  };
  for (const k of ['uid', 'resourceVersion', 'creationTimestamp'] as const)
    if (m[k] !== undefined) metadata[k] = m[k];
  return { metadata, spec: specOf(d.spec) };
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
    const doc = plainToInstance(ProxyPolicyFields, json);
    absentNulls(doc);
    const errors = validateSync(doc, {
      whitelist: true,
      forbidNonWhitelisted: true,
      forbidUnknownValues: true,
      validationError: { target: true, value: true },
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
