/**
 * The ProxyPolicy model: class-validator classes whose decorators are every rule a ProxyPolicy
 * obeys. They are the one source of those rules: validate.ts runs them on untrusted objects,
 * and crd.ts turns the same decorators into the CRD's openAPIV3Schema (through
 * class-validator-jsonschema), CEL rules included. `npm run crd` writes crds/ from here;
 * test/api/crd.test.ts checks the committed CRD is what this file generates.
 *
 * Each decorator below says what it checks, the message nftproxy gives when it fails, and
 * what the API server is told (a JSON schema keyword, or a CEL rule for what OpenAPI cannot
 * say). Rules about a field in relation to a sibling (`weights` only with type weighted) are
 * the parent object's CEL rules in the CRD, with the field as their `fieldPath`.
 */
import 'reflect-metadata';
import { Transform, Type } from 'class-transformer';
import {
  ArrayMaxSize,
  ArrayMinSize,
  ArrayUnique,
  IsArray,
  IsDefined,
  IsIn,
  IsInt,
  IsObject,
  IsOptional,
  IsString,
  Max,
  Min,
  ValidateBy,
  ValidateIf,
  ValidateNested,
  type ValidationArguments,
  type ValidationOptions,
} from 'class-validator';
import { JSONSchema } from 'class-validator-jsonschema';
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
} from './types.js';

/** The patterns of Kubernetes names and labels (the CRD states them as they are). */
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

/** A bad value as messages show it: strings quoted, long ones cut. */
export function show(v: unknown): string {
  if (Array.isArray(v)) return 'a list';
  if (v instanceof Map || (typeof v === 'object' && v !== null)) return 'an object';
  if (v === undefined) return 'nothing';
  const text = JSON.stringify(v) ?? String(v);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

// ---------------------------------------------------------------------------------------------
// What the CRD is told besides the JSON schema keywords: CEL rules, and the marks crd.ts reads.

/** A CEL rule of the CRD (`x-kubernetes-validations`). */
export interface CelRule {
  rule: string;
  message?: string;
  messageExpression?: string;
  fieldPath?: string;
  reason?: 'FieldValueRequired' | 'FieldValueForbidden' | 'FieldValueInvalid';
}

/** Schema keys crd.ts reads and removes: rules for the parent object, a map's value schema. */
export const SchemaMark = {
  /** CEL rules that belong to the object holding this property. */
  parentRules: 'x-nftproxy-parent-rules',
  /** The property is a string map: its `items` are the schema of its values. */
  map: 'x-nftproxy-map',
} as const;

const rules = (...r: CelRule[]) => ({ 'x-kubernetes-validations': r });

/**
 * The JSON schema a constraint stands for, by constraint name (read by crd.ts), from the
 * constraint's parameters and the property's name only: one function serves every use.
 */
export const constraintSchemas = new Map<string, (constraints: unknown[], property: string) => object>();

/**
 * A constraint of our own, through class-validator's ValidateBy: `problem` says what is wrong
 * with a value (undefined: nothing), `schema` what the CRD says for it, from `constraints`
 * (the parameters) alone.
 */
function constraint(
  name: string,
  problem: (value: unknown, args: ValidationArguments) => string | undefined,
  schema: (constraints: unknown[], property: string) => object,
  constraints: unknown[] = [],
  options?: ValidationOptions,
): PropertyDecorator {
  if (!constraintSchemas.has(name)) constraintSchemas.set(name, schema);
  return ValidateBy(
    {
      name,
      constraints,
      validator: {
        validate: (value, args) => problem(value, args!) === undefined,
        defaultMessage: (args) => problem(args!.value, args!) ?? '',
      },
    },
    options,
  );
}

/** Several decorators as one. */
function all(...decorators: PropertyDecorator[]): PropertyDecorator {
  return (target, key) => {
    for (const d of decorators) d(target, key);
  };
}

// ---------------------------------------------------------------------------------------------
// The decorators

const Required = (what = '') => IsDefined({ message: `is required${what}` });

const typeMessage = (what: string) => (a: ValidationArguments) => `must be ${what}, not ${show(a.value)}`;

/** An object (nested: its class is validated too). */
function Nested(cls: () => new () => object, each = false): PropertyDecorator {
  return all(IsObject({ each, message: typeMessage('an object') }), ValidateNested({ each }), Type(cls));
}

/** A list of at most `max` items (at least `min`), `unique` as a set. */
function List(opts: { max: number; min?: number; unique?: boolean }): PropertyDecorator {
  return all(
    IsArray({ message: typeMessage('a list') }),
    ...(opts.min ? [ArrayMinSize(opts.min, { message: 'must not be empty' })] : []),
    ArrayMaxSize(opts.max, {
      message: (a) =>
        `must have at most ${opts.max} items, not ${Array.isArray(a.value) ? a.value.length : 0}`,
    }),
    ...(opts.unique ? [ArrayUnique({ message: 'duplicate value' })] : []),
  );
}

/** An integer from `min` to `max`. */
function Range(min: number, max: number): PropertyDecorator {
  const message = (a: ValidationArguments) => `must be from ${min} to ${max}, not ${String(a.value)}`;
  return all(IsInt({ message: typeMessage('an integer') }), Min(min, { message }), Max(max, { message }));
}

/** One of `values`. */
function OneOf(values: readonly (string | number)[]): PropertyDecorator {
  return IsIn([...values], {
    message: (a) => `must be one of ${values.map((x) => JSON.stringify(x)).join(', ')}; not ${show(a.value)}`,
  });
}

/** Characters as Kubernetes counts them (code points). */
const chars = (s: string) => [...s].length;

/**
 * A string of at most `max` characters (at least `min`) matching `pattern`; `what` names what
 * the pattern is in the message. `each`: every item of a list (or value of a map).
 */
function Text(opts: {
  max: number;
  min?: number;
  pattern?: string;
  what?: string;
  each?: boolean;
}): PropertyDecorator {
  const each = opts.each ?? false;
  const re = opts.pattern === undefined ? undefined : new RegExp(opts.pattern);
  return all(
    IsString({ each, message: typeMessage('a string') }),
    ...(opts.max < Infinity
      ? [
          constraint(
            'maxChars',
            (v) =>
              typeof v === 'string' && chars(v) > opts.max
                ? `must be at most ${opts.max} characters, not ${chars(v)}: ${show(v)}`
                : undefined,
            ([max]) => ({ maxLength: max }),
            [opts.max],
            { each },
          ),
        ]
      : []),
    ...(opts.min
      ? [
          constraint(
            'minChars',
            (v) => (typeof v === 'string' && chars(v) < opts.min! ? 'must not be empty' : undefined),
            ([min]) => ({ minLength: min }),
            [opts.min],
            { each },
          ),
        ]
      : []),
    ...(re
      ? [
          constraint(
            'pattern',
            (v) =>
              typeof v === 'string' && !re.test(v) ? `not a valid ${opts.what}: ${show(v)}` : undefined,
            ([pattern]) => ({ pattern }),
            [opts.pattern],
            { each },
          ),
        ]
      : []),
  );
}

const ServiceName = (each = false) =>
  Text({
    max: MAX_LABEL,
    pattern: Patterns.dns1035Label,
    what: "Service name (lower case letters, digits and '-', starting with a letter)",
    each,
  });
const DnsLabel = () =>
  Text({
    max: MAX_LABEL,
    pattern: Patterns.dns1123Label,
    what: "DNS label (lower case letters, digits and '-')",
  });
const DnsSubdomain = () =>
  Text({
    max: MAX_SUBDOMAIN,
    pattern: Patterns.dns1123Subdomain,
    what: "DNS subdomain (lower case letters, digits, '-' and '.')",
  });
const LabelValue = (each = false) =>
  Text({
    max: MAX_LABEL,
    pattern: Patterns.labelValue,
    what: "label value (letters, digits, '-', '_' and '.', alphanumeric at both ends)",
    each,
  });

const LABEL_KEY_WHAT =
  "label key (a name of at most 63 characters, optionally after a DNS subdomain and '/')";
const labelKeyRe = new RegExp(Patterns.labelKey);
const PREFIX_RULE = "!self.contains('/') || self.indexOf('/') <= 253";
const PREFIX_MESSAGE = 'the prefix of a label key must be at most 253 characters';

/** What is wrong with a label key, if anything. */
function labelKeyProblem(k: string): string | undefined {
  if (chars(k) > MAX_LABEL_KEY)
    return `a label key must be at most ${MAX_LABEL_KEY} characters, not ${chars(k)}: ${show(k)}`;
  if (!labelKeyRe.test(k)) return `not a valid ${LABEL_KEY_WHAT}: ${show(k)}`;
  if (k.indexOf('/') > MAX_SUBDOMAIN) return `${PREFIX_MESSAGE}: ${show(k)}`;
  return undefined;
}

/** A label key. */
function LabelKey(): PropertyDecorator {
  return all(
    IsString({ message: typeMessage('a string') }),
    constraint(
      'labelKey',
      (v) => (typeof v === 'string' ? labelKeyProblem(v) : undefined),
      () => ({
        maxLength: MAX_LABEL_KEY,
        pattern: Patterns.labelKey,
        ...rules({ rule: PREFIX_RULE, message: PREFIX_MESSAGE }),
      }),
    ),
  );
}

/**
 * A string map with label keys and label values, at most `max` entries (read as a Map, so
 * that keys never meet Object.prototype). Values are checked one by one; keys together.
 */
function LabelMap(max: number): PropertyDecorator {
  return all(
    constraint(
      'labelMap',
      (v) => (v instanceof Map ? undefined : `must be an object, not ${show(v)}`),
      () => ({ type: 'object', [SchemaMark.map]: true }),
    ),
    constraint(
      'labelKeys',
      (v) => {
        if (!(v instanceof Map)) return undefined;
        if (v.size > max) return `must have at most ${max} labels, not ${v.size}`;
        for (const k of v.keys() as Iterable<string>) {
          const bad = labelKeyProblem(k);
          if (bad) return bad;
        }
        return undefined;
      },
      ([limit]) => ({
        ...((limit as number) < Infinity ? { maxProperties: limit } : {}),
        ...rules({
          rule: `self.all(k, k.matches('${Patterns.labelKey}') && (!k.contains('/') || k.indexOf('/') <= 253))`,
          message:
            "keys must be label keys: a name of at most 63 characters, optionally after a DNS subdomain prefix and '/'",
        }),
      }),
      [max],
    ),
    LabelValue(true),
    // class-transformer would empty a Map: keep it as readJSON made it.
    Transform(({ obj, key }) => (obj as Record<string, unknown>)[key]),
  );
}

/** What is wrong with a CIDR as Kubernetes' `isCIDR` takes it, with host bits clear. */
function cidrProblem(s: string): string | undefined {
  if (chars(s) > MAX_CIDR_TEXT)
    return `must be at most ${MAX_CIDR_TEXT} characters, not ${chars(s)}: ${show(s)}`;
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

/** Every item a CIDR with host bits clear. */
function CIDRs(): PropertyDecorator {
  return all(
    IsString({ each: true, message: typeMessage('a string') }),
    constraint(
      'cidr',
      (v) => (typeof v === 'string' ? cidrProblem(v) : undefined),
      () => ({
        maxLength: MAX_CIDR_TEXT,
        ...rules(
          { rule: 'isCIDR(self)', messageExpression: "'not a valid CIDR: ' + self" },
          {
            rule: '!isCIDR(self) || cidr(self).masked() == cidr(self)',
            messageExpression:
              "'host bits set in ' + self + ': the network is ' + string(cidr(self).masked())",
          },
        ),
      }),
      [],
      { each: true },
    ),
  );
}

/** RFC 3339, as Kubernetes writes timestamps. */
function DateTime(): PropertyDecorator {
  return constraint(
    'dateTime',
    (v) =>
      typeof v === 'string' &&
      /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/.test(v) &&
      !Number.isNaN(Date.parse(v))
        ? undefined
        : `must be an RFC 3339 date-time, not ${show(v)}`,
    () => ({ type: 'string', format: 'date-time' }),
  );
}

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Map);
const names = (keys: readonly string[]) => `${keys.slice(0, -1).join(', ')} and ${keys.at(-1)}`;

/** Exactly one of `keys` is set in this object. */
function ExactlyOne(keys: readonly string[]): PropertyDecorator {
  return constraint(
    'exactlyOne',
    (v) => {
      if (!isPlainObject(v)) return undefined; // not an object: said already
      const set = keys.filter((k) => v[k] !== undefined);
      if (set.length === 1) return undefined;
      return `exactly one of ${names(keys)} must be set, not ${set.length === 0 ? 'none' : set.join(' and ')}`;
    },
    ([ks]) => {
      const k = ks as string[];
      const rule =
        k.length === 2
          ? `has(self.${k[0]}) != has(self.${k[1]})`
          : `${k.map((x) => `(has(self.${x}) ? 1 : 0)`).join(' + ')} == 1`;
      return rules({ rule, message: `exactly one of ${names(k)} must be set` });
    },
    [keys],
  );
}

/** A sibling condition, for messages and CEL: `field` is one of `values`. */
interface When {
  field: string;
  values: readonly string[];
  /** Every value `field` can validly have: with another, its own problem comes first. */
  known: readonly string[];
}

const whenText = (w: When) => `${w.field} ${w.values.join(' and ')}`;
const whenCel = (w: When) =>
  w.values.length === 1
    ? `self.${w.field} == '${w.values[0]}'`
    : `self.${w.field} in [${w.values.map((v) => `'${v}'`).join(', ')}]`;

/** Set only when `w` holds (while `w.field` is valid). Optional otherwise. */
function OnlyWith(w: When): PropertyDecorator {
  return constraint(
    'onlyWith',
    (v, a) => {
      const o = a.object as Record<string, unknown>;
      if (
        v === undefined ||
        w.values.includes(o[w.field] as string) ||
        !w.known.includes(o[w.field] as string)
      )
        return undefined;
      return `is allowed only with ${whenText(w)}, not with ${show(o[w.field])}`;
    },
    ([when], property) => ({
      [SchemaMark.parentRules]: [
        {
          rule: `${whenCel(when as When)} || !has(self.${property})`,
          message: `${property} may be set only with ${whenText(when as When)}`,
          fieldPath: `.${property}`,
          reason: 'FieldValueForbidden',
        },
      ],
    }),
    [w],
  );
}

/** Required, and a non-empty list, when `w` holds; optional otherwise. */
function RequiredWith(w: When): PropertyDecorator {
  const holds = (o: Record<string, unknown>) => w.values.includes(o[w.field] as string);
  return (target, property) =>
    all(
      ValidateIf((o: Record<string, unknown>) => o[property as string] !== undefined || holds(o)),
      Required(` with ${whenText(w)}`),
      constraint(
        'nonEmptyWith',
        (v, a) =>
          holds(a.object as Record<string, unknown>) && Array.isArray(v) && v.length === 0
            ? `must not be empty with ${w.field} ${String((a.object as Record<string, unknown>)[w.field])}`
            : undefined,
        ([when], p) => ({
          [SchemaMark.parentRules]: [
            {
              rule: `!(${whenCel(when as When)}) || (has(self.${p}) && size(self.${p}) > 0)`,
              message: `${p} must be set, and not empty, with ${whenText(when as When)}`,
              fieldPath: `.${p}`,
              reason: 'FieldValueRequired',
            },
          ],
        }),
        [w],
      ),
    )(target, property);
}

/** An empty list (or none) unless `w` holds (while `w.field` is valid). */
function EmptyUnless(w: When): PropertyDecorator {
  const others = w.known.filter((k) => !w.values.includes(k));
  return constraint(
    'emptyUnless',
    (v, a) => {
      const f = (a.object as Record<string, unknown>)[w.field] as string;
      return others.includes(f) && Array.isArray(v) && v.length > 0
        ? `must be empty with ${w.field} ${f}`
        : undefined;
    },
    ([when], property) => {
      const x = when as When;
      const rest = x.known.filter((k) => !x.values.includes(k));
      return {
        [SchemaMark.parentRules]: [
          {
            rule: `${whenCel(x)} || !has(self.${property}) || size(self.${property}) == 0`,
            message: `${property} must be empty or unset with ${x.field} ${rest.join(' and ')}`,
            fieldPath: `.${property}`,
            reason: 'FieldValueForbidden',
          },
        ],
      };
    },
    [w],
  );
}

/** At least one of the lists `keys` of this object is non-empty. */
function SomeNonEmpty(keys: readonly string[]): PropertyDecorator {
  const message = `at least one of ${names(keys)} must be non-empty`;
  return constraint(
    'someNonEmpty',
    (v) =>
      isPlainObject(v) && !keys.some((k) => Array.isArray(v[k]) && (v[k] as unknown[]).length > 0)
        ? message
        : undefined,
    ([ks]) =>
      rules({
        rule: (ks as string[]).map((k) => `(has(self.${k}) && size(self.${k}) > 0)`).join(' || '),
        message: `at least one of ${names(ks as string[])} must be non-empty`,
      }),
    [keys],
  );
}

/** Documentation for the CRD. */
const Doc = (description: string) => JSONSchema({ description });

// ---------------------------------------------------------------------------------------------
// The model

const SCHEDULERS = Object.values(Scheduler);
const AFFINITIES = ['None', 'ClientIP'] as const;
/** Label selector operators. */
export const OPERATORS = ['In', 'NotIn', 'Exists', 'DoesNotExist'] as const;
/** A label selector operator. */
export type Operator = (typeof OPERATORS)[number];
const withValues: When = { field: 'operator', values: ['In', 'NotIn'], known: OPERATORS };
const weighted: When = { field: 'type', values: [Scheduler.weighted], known: SCHEDULERS };
const maglev: When = { field: 'type', values: [Scheduler.maglev], known: SCHEDULERS };
const clientIP: When = { field: 'type', values: ['ClientIP'], known: AFFINITIES };

/** One requirement of a label selector (`matchExpressions[]`). */
export class MatchExpressionFields {
  @Required()
  @LabelKey()
  key!: string;

  @Required()
  @OneOf(OPERATORS)
  operator!: Operator;

  @RequiredWith(withValues)
  @List({ max: MAX_MATCH_VALUES })
  @LabelValue(true)
  @EmptyUnless(withValues)
  values?: string[];
}

/** A Kubernetes label selector (`serviceSelector`). */
export class LabelSelectorFields {
  @IsOptional()
  @LabelMap(MAX_MATCH_LABELS)
  matchLabels?: Map<string, string>;

  @IsOptional()
  @List({ max: MAX_MATCH_EXPRESSIONS })
  @Nested(() => MatchExpressionFields, true)
  matchExpressions?: MatchExpressionFields[];
}

/** `spec.selector`: the services, by name or by label. */
export class SelectorFields {
  @IsOptional()
  @Doc('Services by name.')
  @List({ min: 1, max: MAX_SERVICE_NAMES, unique: true })
  @ServiceName(true)
  serviceNames?: string[];

  @IsOptional()
  @Doc(
    'Services by label, as a Kubernetes label selector. An empty selector selects every Service of the namespace.',
  )
  @Nested(() => LabelSelectorFields)
  serviceSelector?: LabelSelectorFields;
}

/** The keys of a weight rule's `match`, exactly one of which is set. */
export const WEIGHT_MATCH_KEYS = ['zone', 'node', 'hostname', 'targetRef'] as const;

/** `weights[].match`: which endpoints a weight rule applies to. */
export class WeightMatchFields {
  @IsOptional()
  @Doc("The endpoint's zone.")
  @Text({ min: 1, max: MAX_LABEL, pattern: Patterns.labelValue, what: 'zone (a label value)' })
  zone?: string;

  @IsOptional()
  @Doc("The endpoint's node name.")
  @DnsSubdomain()
  node?: string;

  @IsOptional()
  @Doc("The endpoint's hostname.")
  @DnsLabel()
  hostname?: string;

  @IsOptional()
  @Doc("The name of the endpoint's target (its Pod).")
  @DnsSubdomain()
  targetRef?: string;
}

/** `weights[]`: a weight for the endpoints a rule matches. */
export class WeightRuleFields {
  @Required()
  @Doc('The endpoints the rule applies to. Exactly one of the four.')
  @Nested(() => WeightMatchFields)
  @ExactlyOne(WEIGHT_MATCH_KEYS)
  match!: WeightMatchFields;

  @Required()
  @Doc('0 (no new connections) to 100.')
  @Range(0, MAX_WEIGHT)
  weight!: number;
}

/** `spec.scheduler`: how a backend is chosen, and what each type takes. */
export class SchedulerFields {
  @IsOptional()
  @Doc(
    'random (the default, as kube-proxy), roundRobin, sourceHash (by client address), weighted (at random, ' +
      'by weights) or maglev (consistent hashing of the client address).',
  )
  @OneOf(SCHEDULERS)
  type: Scheduler = Scheduler.random;

  @RequiredWith(weighted)
  @Doc('With weighted only, and required then. The first rule that matches an endpoint gives its weight.')
  @List({ min: 1, max: MAX_WEIGHT_RULES })
  @Nested(() => WeightRuleFields, true)
  @OnlyWith(weighted)
  weights?: WeightRuleFields[];

  @IsOptional()
  @Doc(`With weighted only: the weight of endpoints no rule matches, 0 to 100. Default ${DEFAULT_WEIGHT}.`)
  @Range(0, MAX_WEIGHT)
  @OnlyWith(weighted)
  defaultWeight?: number;

  @IsOptional()
  @Doc(`The lookup table size, a prime, with maglev only. Default ${DEFAULT_MAGLEV_TABLE_SIZE}.`)
  @OneOf(MAGLEV_TABLE_SIZES)
  @OnlyWith(maglev)
  tableSize?: number;
}

/** `spec.sessionAffinity`: overrides the Service's own. */
export class SessionAffinityFields {
  @Required()
  @OneOf(AFFINITIES)
  type!: (typeof AFFINITIES)[number];

  @IsOptional()
  @Doc(`With ClientIP only. Default ${DEFAULT_AFFINITY_TIMEOUT_SECONDS} (3 hours), at most one day.`)
  @Range(1, MAX_AFFINITY_TIMEOUT_SECONDS)
  @OnlyWith(clientIP)
  timeoutSeconds?: number;
}

/** `spec.sourceRanges`: which sources may connect to external addresses. */
export class SourceRangesFields {
  @IsOptional()
  @List({ max: MAX_RANGES, unique: true })
  @CIDRs()
  allow?: string[];

  @IsOptional()
  @List({ max: MAX_RANGES, unique: true })
  @CIDRs()
  deny?: string[];
}

/** `spec`: the whole of a ProxyPolicy's behaviour. */
export class SpecFields {
  @Required()
  @Doc('The Services of this namespace the policy applies to. Exactly one of the two.')
  @Nested(() => SelectorFields)
  @ExactlyOne(['serviceNames', 'serviceSelector'])
  selector!: SelectorFields;

  @IsOptional()
  @Doc('How a backend is chosen for a new connection.')
  @Nested(() => SchedulerFields)
  scheduler: SchedulerFields = new SchedulerFields();

  @IsOptional()
  @Doc("Overrides the Service's own spec.sessionAffinity when set.")
  @Nested(() => SessionAffinityFields)
  sessionAffinity?: SessionAffinityFields;

  @IsOptional()
  @Doc(
    'auto (as Kubernetes decides), always (every connection, also from pods) or never (except hairpin ' +
      'traffic, a pod reaching itself, which needs it).',
  )
  @OneOf(Object.values(Masquerade))
  masquerade: Masquerade = Masquerade.auto;

  @IsOptional()
  @Doc(
    "Which sources may open new connections to the Services' external addresses (NodePorts, external IPs, " +
      'load balancer IPs). With allow, only those; deny always wins.',
  )
  @Nested(() => SourceRangesFields)
  @SomeNonEmpty(['allow', 'deny'])
  sourceRanges?: SourceRangesFields;
}

/** The ObjectMeta fields nftproxy reads (the API server checks them itself: not in the CRD). */
export class MetadataFields {
  @Required()
  @DnsSubdomain()
  name!: string;

  @Required()
  @DnsLabel()
  namespace!: string;

  @IsOptional()
  @IsString({ message: typeMessage('a string') })
  uid?: string;

  @IsOptional()
  @Range(0, Number.MAX_SAFE_INTEGER)
  generation: number = 1;

  @IsOptional()
  @IsString({ message: typeMessage('a string') })
  resourceVersion?: string;

  @IsOptional()
  @DateTime()
  creationTimestamp?: string;

  @IsOptional()
  @LabelMap(Infinity)
  labels: Map<string, string> = new Map();
}

/** A whole ProxyPolicy object, as read (the root description is the CRD's). */
@JSONSchema({
  description:
    'ProxyPolicy sets how nftproxy handles the Services it selects in its namespace: how a backend is ' +
    'chosen, session affinity, masquerading and which sources may connect. When two policies select ' +
    'one Service, the older one wins.',
})
export class ProxyPolicyFields {
  @Required()
  @OneOf([API_VERSION])
  apiVersion!: string;

  @Required()
  @OneOf([KIND])
  kind!: string;

  @Required()
  @Nested(() => MetadataFields)
  metadata!: MetadataFields;

  @Required()
  @Nested(() => SpecFields)
  spec!: SpecFields;
}

/** Every class of the model. */
export const MODEL_CLASSES = [
  ProxyPolicyFields,
  MetadataFields,
  SpecFields,
  SelectorFields,
  LabelSelectorFields,
  MatchExpressionFields,
  SchedulerFields,
  WeightRuleFields,
  WeightMatchFields,
  SessionAffinityFields,
  SourceRangesFields,
] as const;

/** Whether `v` is an object of the model. */
export const isModel = (v: unknown): v is object => MODEL_CLASSES.some((c) => v instanceof c);
