/**
 * A model of what the API server does with a custom resource on create, for testing a CRD
 * without a cluster: ObjectMeta checks, status dropped (status subresource), non-nullable nulls
 * pruned, unknown fields rejected (strict field validation), structural defaulting, OpenAPI
 * validation, then the `x-kubernetes-validations` CEL rules, run by @marcbachmann/cel-js with
 * Kubernetes' `isCIDR`/`cidr()` library functions modelled on Go's netip here.
 *
 * It is written from the Kubernetes sources, not from src/api: the point is a second opinion.
 * Not modelled: ObjectMeta fields other than name, namespace, labels, generation, uid,
 * resourceVersion and creationTimestamp; formats other than date-time, int32 and int64;
 * transition rules (oldSelf); runtime CEL cost limits.
 */
import { Environment } from '@marcbachmann/cel-js';

/** The parts of an OpenAPI v3 schema node that a structural CRD schema may use. */
export interface Schema {
  type?: string;
  description?: string;
  properties?: Record<string, Schema>;
  additionalProperties?: Schema | boolean;
  items?: Schema;
  required?: string[];
  enum?: unknown[];
  default?: unknown;
  nullable?: boolean;
  format?: string;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  minItems?: number;
  maxItems?: number;
  maxProperties?: number;
  'x-kubernetes-list-type'?: 'atomic' | 'set' | 'map';
  'x-kubernetes-list-map-keys'?: string[];
  'x-kubernetes-validations'?: Rule[];
  [other: string]: unknown;
}

/** One `x-kubernetes-validations` entry. */
export interface Rule {
  rule: string;
  message?: string;
  messageExpression?: string;
  fieldPath?: string;
  reason?: string;
}

/** A field error as the API server reports it (`spec.scheduler.weights[0].weight`). */
export interface FieldError {
  field: string;
  message: string;
}

/** The CRD fields this model reads. */
export interface CRD {
  spec: {
    group: string;
    names: { kind: string; plural: string };
    scope: string;
    versions: {
      name: string;
      schema: { openAPIV3Schema: Schema };
      subresources?: { status?: object };
      additionalPrinterColumns?: { name: string; type: string; jsonPath: string }[];
    }[];
  };
}

type JSONObject = Record<string, unknown>;

const isObject = (v: unknown): v is JSONObject => typeof v === 'object' && v !== null && !Array.isArray(v);
const own = (o: object, k: string) => Object.prototype.hasOwnProperty.call(o, k);
const clone = <T>(v: T): T => (v === undefined ? v : (JSON.parse(JSON.stringify(v)) as T));
const quote = (v: unknown) => JSON.stringify(v) ?? String(v);
/** Kubernetes counts string lengths in runes. */
const runes = (s: string) => [...s].length;

// ---------------------------------------------------------------------------------------------
// Go's net/netip, as Kubernetes' CEL library parses CIDRs

/** A parsed prefix: 4 or 16 bytes and a length. */
export interface Prefix {
  bytes: number[];
  bits: number;
}

function goParseIPv4Fields(s: string): number[] | undefined {
  const fields: number[] = [];
  let val = 0;
  let digits = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c >= '0' && c <= '9') {
      if (digits === 1 && val === 0) return undefined; // leading zero
      val = val * 10 + Number(c);
      digits++;
      if (val > 255) return undefined;
    } else if (c === '.') {
      if (i === 0 || i === s.length - 1 || s[i - 1] === '.') return undefined;
      if (fields.length === 3) return undefined;
      fields.push(val);
      val = 0;
      digits = 0;
    } else return undefined;
  }
  if (fields.length < 3) return undefined;
  fields.push(val);
  return fields;
}

function goParseIPv6(input: string): { bytes: number[]; zone: string } | undefined {
  let s = input;
  let zone = '';
  const pct = s.indexOf('%');
  if (pct >= 0) {
    zone = s.slice(pct + 1);
    s = s.slice(0, pct);
    if (zone === '') return undefined;
  }
  const ip = new Array<number>(16).fill(0);
  let ellipsis = -1;
  if (s.startsWith('::')) {
    ellipsis = 0;
    s = s.slice(2);
    if (s === '') return { bytes: ip, zone };
  }
  let i = 0;
  while (i < 16) {
    let off = 0;
    let acc = 0;
    for (; off < s.length; off++) {
      const d = parseInt(s[off]!, 16);
      if (Number.isNaN(d) || !/[0-9a-fA-F]/.test(s[off]!)) break;
      acc = acc * 16 + d;
      if (off > 3 || acc > 0xffff) return undefined;
    }
    if (off === 0) return undefined;
    if (off < s.length && s[off] === '.') {
      if (ellipsis < 0 && i !== 12) return undefined;
      if (i + 4 > 16) return undefined;
      const v4 = goParseIPv4Fields(s);
      if (!v4) return undefined;
      ip.splice(i, 4, ...v4);
      s = '';
      i += 4;
      break;
    }
    ip[i] = acc >> 8;
    ip[i + 1] = acc & 0xff;
    i += 2;
    s = s.slice(off);
    if (s === '') break;
    if (s[0] !== ':' || s.length === 1) return undefined;
    s = s.slice(1);
    if (s[0] === ':') {
      if (ellipsis >= 0) return undefined;
      ellipsis = i;
      s = s.slice(1);
      if (s === '') break;
    }
  }
  if (s !== '') return undefined;
  if (i < 16) {
    if (ellipsis < 0) return undefined;
    const n = 16 - i;
    for (let j = i - 1; j >= ellipsis; j--) ip[j + n] = ip[j]!;
    for (let j = ellipsis; j < ellipsis + n; j++) ip[j] = 0;
  } else if (ellipsis >= 0) return undefined;
  return { bytes: ip, zone };
}

function goParseAddr(s: string): { bytes: number[]; zone: string } | undefined {
  for (const c of s) {
    if (c === '.') {
      const v4 = goParseIPv4Fields(s);
      return v4 && { bytes: v4, zone: '' };
    }
    if (c === ':') return goParseIPv6(s);
    if (c === '%') return undefined;
  }
  return undefined;
}

/** Kubernetes' `parseCIDR`: netip.ParsePrefix, refusing zones and IPv4-mapped IPv6. */
export function k8sParseCIDR(s: string): Prefix | undefined {
  const slash = s.lastIndexOf('/');
  if (slash < 0) return undefined;
  const addr = goParseAddr(s.slice(0, slash));
  if (!addr || addr.zone !== '') return undefined;
  const bitsText = s.slice(slash + 1);
  if (!/^(0|[1-9][0-9]*)$/.test(bitsText)) return undefined;
  const bits = Number(bitsText);
  if (bits > addr.bytes.length * 8) return undefined;
  const b = addr.bytes;
  if (b.length === 16 && b.slice(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff)
    return undefined;
  return { bytes: b, bits };
}

function masked(p: Prefix): Prefix {
  const bytes = p.bytes.map((b, i) => {
    const keep = Math.min(8, Math.max(0, p.bits - 8 * i));
    return b & ((0xff << (8 - keep)) & 0xff);
  });
  return { bytes, bits: p.bits };
}

/** Go's netip.Prefix.String (RFC 5952 for IPv6). */
function goPrefixString(p: Prefix): string {
  if (p.bytes.length === 4) return `${p.bytes.join('.')}/${p.bits}`;
  const w = Array.from({ length: 8 }, (_, i) => (p.bytes[2 * i]! << 8) | p.bytes[2 * i + 1]!);
  let [best, bestLen] = [-1, 0];
  for (let i = 0; i < 8; i++) {
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) [best, bestLen] = [i, j - i];
  }
  const hex = (a: number[]) => a.map((x) => x.toString(16)).join(':');
  const text = best < 0 ? hex(w) : `${hex(w.slice(0, best))}::${hex(w.slice(best + bestLen))}`;
  return `${text}/${p.bits}`;
}

/** The CEL `net.CIDR` value. */
class CIDRValue {
  constructor(readonly prefix: Prefix) {}
}

function celEnvironment(): Environment {
  const cidrOf = (s: string) => {
    const p = k8sParseCIDR(s);
    if (!p) throw new Error(`network address parse error during conversion from string: ${quote(s)}`);
    return new CIDRValue(p);
  };
  return new Environment()
    .registerType('net.CIDR', CIDRValue)
    .registerFunction('isCIDR(string): bool', (s: string) => k8sParseCIDR(s) !== undefined)
    .registerFunction('cidr(string): net.CIDR', cidrOf)
    .registerFunction({
      name: 'masked',
      receiverType: 'net.CIDR',
      returnType: 'net.CIDR',
      params: [],
      handler: (c: CIDRValue) => new CIDRValue(masked(c.prefix)),
    })
    .registerFunction('string(net.CIDR): string', (c: CIDRValue) => goPrefixString(c.prefix))
    .registerOperator(
      'net.CIDR == net.CIDR',
      (a: CIDRValue, b: CIDRValue) =>
        a.prefix.bits === b.prefix.bits && a.prefix.bytes.join() === b.prefix.bytes.join(),
    );
}

// ---------------------------------------------------------------------------------------------
// Kubernetes' name and label validation (apimachinery/pkg/util/validation)

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const QUALIFIED_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

export const isDNS1123Label = (s: string) => s.length <= 63 && DNS1123_LABEL.test(s);
export const isDNS1123Subdomain = (s: string) => s.length <= 253 && DNS1123_SUBDOMAIN.test(s);
export const isLabelValue = (s: string) => s.length <= 63 && LABEL_VALUE.test(s);
export function isQualifiedName(s: string): boolean {
  const parts = s.split('/');
  if (parts.length > 2) return false;
  const name = parts.at(-1)!;
  if (parts.length === 2 && (parts[0] === '' || !isDNS1123Subdomain(parts[0]!))) return false;
  return name.length > 0 && name.length <= 63 && QUALIFIED_NAME.test(name);
}

const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;
const isDateTime = (v: unknown) => typeof v === 'string' && RFC3339.test(v) && !Number.isNaN(Date.parse(v));

// ---------------------------------------------------------------------------------------------
// The schema walk

const fieldPath = (path: string, key: string) => (path ? `${path}.${key}` : key);
const mapPath = (path: string, key: string) => `${path}[${key}]`;

/** The schema of an object's property `k`, or undefined if `k` is unknown there. */
function propertySchema(s: Schema, k: string): Schema | undefined {
  if (s.properties && own(s.properties, k)) return s.properties[k];
  return isObject(s.additionalProperties) ? s.additionalProperties : undefined;
}

/** Drops unknown fields (reporting them) and non-nullable nulls without a default. */
function prune(v: unknown, s: Schema, path: string, errors: FieldError[]): void {
  if (isObject(v) && s.type === 'object') {
    for (const k of Object.keys(v)) {
      const ps = propertySchema(s, k);
      const at = s.properties ? fieldPath(path, k) : mapPath(path, k);
      if (!ps) {
        errors.push({ field: at, message: `unknown field ${quote(k)}` });
        delete v[k];
      } else if (v[k] === null && !ps.nullable && ps.default === undefined) delete v[k];
      else prune(v[k], ps, at, errors);
    }
  } else if (Array.isArray(v) && s.type === 'array' && s.items) {
    v.forEach((item, i) => prune(item, s.items!, `${path}[${i}]`, errors));
  }
}

/** Structural defaulting: absent (or non-nullable null) fields get a copy of their default. */
function applyDefaults(v: unknown, s: Schema): void {
  if (isObject(v)) {
    for (const [k, ps] of Object.entries(s.properties ?? {})) {
      if (ps.default !== undefined && (!own(v, k) || (v[k] === null && !ps.nullable)))
        v[k] = clone(ps.default);
    }
    for (const k of Object.keys(v)) {
      const ps = propertySchema(s, k);
      if (ps) applyDefaults(v[k], ps);
    }
  } else if (Array.isArray(v) && s.items) {
    for (const item of v) applyDefaults(item, s.items);
  }
}

/**
 * OpenAPI validation. Returns whether an error was of a kind that stops the API server from
 * running the CEL rules (type, enum, required, maxLength, maxItems, maxProperties).
 */
function validate(v: unknown, s: Schema, path: string, errors: FieldError[]): boolean {
  let blocking = false;
  const fail = (message: string, block = false) => {
    errors.push({ field: path, message });
    blocking ||= block;
  };
  if (v === null) {
    if (!s.nullable) fail(`must be of type ${s.type}, not null`, true);
    return blocking;
  }
  const typeOK =
    (s.type === 'object' && isObject(v)) ||
    (s.type === 'array' && Array.isArray(v)) ||
    (s.type === 'string' && typeof v === 'string') ||
    (s.type === 'integer' && Number.isInteger(v)) ||
    (s.type === 'number' && typeof v === 'number' && Number.isFinite(v)) ||
    (s.type === 'boolean' && typeof v === 'boolean');
  if (!typeOK) {
    fail(`must be of type ${s.type}, not ${Array.isArray(v) ? 'array' : typeof v}`, true);
    return blocking;
  }
  if (s.enum && !s.enum.includes(v)) fail(`Unsupported value: ${quote(v)}`, true);
  if (typeof v === 'number') {
    if (s.minimum !== undefined && v < s.minimum) fail(`should be greater than or equal to ${s.minimum}`);
    if (s.maximum !== undefined && v > s.maximum) fail(`should be less than or equal to ${s.maximum}`);
    if (s.format === 'int32' && Math.abs(v) > 2 ** 31) fail('must fit int32');
  }
  if (typeof v === 'string') {
    if (s.maxLength !== undefined && runes(v) > s.maxLength)
      fail(`Too long: may not be more than ${s.maxLength}`, true);
    if (s.minLength !== undefined && runes(v) < s.minLength)
      fail(`should be at least ${s.minLength} chars long`);
    if (s.pattern !== undefined && !new RegExp(s.pattern).test(v)) fail(`should match '${s.pattern}'`);
    if (s.format === 'date-time' && !isDateTime(v)) fail('must be a date-time');
  }
  if (Array.isArray(v)) {
    if (s.maxItems !== undefined && v.length > s.maxItems)
      fail(`Too many: must have at most ${s.maxItems} items`, true);
    if (s.minItems !== undefined && v.length < s.minItems) fail(`should have at least ${s.minItems} items`);
    v.forEach((item, i) => (blocking = validate(item, s.items!, `${path}[${i}]`, errors) || blocking));
    const keyOf =
      s['x-kubernetes-list-type'] === 'set'
        ? (x: unknown) => quote(x)
        : s['x-kubernetes-list-type'] === 'map'
          ? (x: unknown) =>
              quote(s['x-kubernetes-list-map-keys']!.map((k) => (isObject(x) ? x[k] : undefined)))
          : undefined;
    if (keyOf) {
      const seen = new Set<string>();
      v.forEach((item, i) => {
        const key = keyOf(item);
        if (seen.has(key))
          errors.push({ field: `${path}[${i}]`, message: `Duplicate value: ${quote(item)}` });
        seen.add(key);
      });
    }
  }
  if (isObject(v)) {
    const keys = Object.keys(v);
    if (s.maxProperties !== undefined && keys.length > s.maxProperties)
      fail(`Too many: must have at most ${s.maxProperties} items`, true);
    for (const r of s.required ?? []) {
      if (!own(v, r)) {
        errors.push({ field: fieldPath(path, r), message: 'Required value' });
        blocking = true;
      }
    }
    for (const k of keys) {
      const ps = propertySchema(s, k)!;
      blocking = validate(v[k], ps, s.properties ? fieldPath(path, k) : mapPath(path, k), errors) || blocking;
    }
  }
  return blocking;
}

// ---------------------------------------------------------------------------------------------
// CEL

/** A compiled rule at one schema node. */
interface CompiledRule {
  rule: Rule;
  check: { valid: boolean; type?: string; error?: Error };
  messageCheck?: { valid: boolean; type?: string; error?: Error } | undefined;
  evaluate: (self: unknown) => unknown;
  message: (self: unknown) => unknown;
}

/** Every node of a schema with its path, as `spec.scheduler.weights[*].match`. */
export function* schemaNodes(s: Schema, path = ''): Generator<[string, Schema]> {
  yield [path, s];
  for (const [k, ps] of Object.entries(s.properties ?? {})) yield* schemaNodes(ps, fieldPath(path, k));
  if (isObject(s.additionalProperties)) yield* schemaNodes(s.additionalProperties, `${path}[*]`);
  if (s.items) yield* schemaNodes(s.items, `${path}[*]`);
}

/** The value of `v` as CEL sees it: integers as int (BigInt), string maps as Maps. */
function celValue(v: unknown, s: Schema): unknown {
  if (s.type === 'integer' && typeof v === 'number') return BigInt(v);
  if (Array.isArray(v)) return v.map((x) => celValue(x, s.items!));
  if (isObject(v)) {
    if (s.properties) {
      const out: JSONObject = {};
      for (const [k, x] of Object.entries(v)) out[k] = celValue(x, s.properties[k]!);
      return out;
    }
    if (isObject(s.additionalProperties)) {
      const item = s.additionalProperties;
      return new Map(Object.entries(v).map(([k, x]) => [k, celValue(x, item)]));
    }
  }
  return v;
}

/** The CEL rules of a CRD version, type-checked against the schema as the API server does. */
class CELRules {
  readonly byNode = new Map<Schema, CompiledRule[]>();

  constructor(root: Schema) {
    const base = celEnvironment();
    const types = new Map<Schema, string>();
    const declare = (s: Schema): string => {
      if (!types.has(s)) types.set(s, typeOf(s));
      return types.get(s)!;
    };
    const typeOf = (s: Schema): string => {
      switch (s.type) {
        case 'string':
          return 'string';
        case 'integer':
          return 'int';
        case 'number':
          return 'double';
        case 'boolean':
          return 'bool';
        case 'array':
          return `list<${declare(s.items!)}>`;
        case 'object': {
          if (isObject(s.additionalProperties)) return `map<string, ${declare(s.additionalProperties)}>`;
          if (!s.properties) return 'map<string, dyn>';
          const fields: Record<string, string> = {};
          for (const [k, ps] of Object.entries(s.properties)) fields[k] = declare(ps);
          const name = `crd.T${types.size}`;
          base.registerType({ name, fields });
          return name;
        }
      }
      return 'dyn';
    };
    for (const [, s] of schemaNodes(root)) declare(s);
    for (const [, s] of schemaNodes(root)) {
      const rules = s['x-kubernetes-validations'];
      if (!rules?.length) continue;
      const env = base.clone().registerVariable('self', declare(s));
      this.byNode.set(
        s,
        rules.map((rule) => {
          const run = (expr: string) => {
            const program = env.parse(expr);
            return (self: unknown) => program({ self: celValue(self, s) });
          };
          return {
            rule,
            check: env.check(rule.rule),
            messageCheck:
              rule.messageExpression === undefined ? undefined : env.check(rule.messageExpression),
            evaluate: run(rule.rule),
            message: rule.messageExpression === undefined ? () => rule.message : run(rule.messageExpression),
          };
        }),
      );
    }
  }

  /** Runs the rules of every node present in `v`, as the API server does after OpenAPI validation. */
  run(v: unknown, s: Schema, path: string, errors: FieldError[]): void {
    for (const r of this.byNode.get(s) ?? []) {
      let ok: unknown;
      try {
        ok = r.evaluate(v);
      } catch (e) {
        errors.push({ field: path, message: `Invalid value: evaluation error: ${(e as Error).message}` });
        continue;
      }
      if (ok === true) continue;
      let message: unknown;
      try {
        message = r.message(v);
      } catch {
        message = undefined;
      }
      const field = r.rule.fieldPath ? path + r.rule.fieldPath : path;
      errors.push({ field, message: String(message ?? `failed rule: ${r.rule.rule}`) });
    }
    if (isObject(v)) {
      for (const [k, x] of Object.entries(v)) {
        const ps = propertySchema(s, k);
        if (ps) this.run(x, ps, s.properties ? fieldPath(path, k) : mapPath(path, k), errors);
      }
    } else if (Array.isArray(v) && s.items) {
      v.forEach((x, i) => this.run(x, s.items!, `${path}[${i}]`, errors));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The API server

/** The metadata fields modelled, as the API server keeps them. */
export interface StoredMetadata {
  name: string;
  namespace: string;
  labels?: Record<string, string>;
  generation?: number;
  uid?: string;
  resourceVersion?: string;
  creationTimestamp?: string;
}

/** A CRD's served version, as the API server would validate objects of it. */
export class CRDModel {
  readonly schema: Schema;
  readonly rules: CELRules;

  constructor(readonly crd: CRD) {
    const version = crd.spec.versions[0]!;
    this.schema = version.schema.openAPIV3Schema;
    this.rules = new CELRules(this.schema);
  }

  get apiVersion(): string {
    return `${this.crd.spec.group}/${this.crd.spec.versions[0]!.name}`;
  }

  /** ObjectMeta checks for a namespaced custom resource (name, namespace, labels). */
  private metadata(m: unknown, errors: FieldError[]): StoredMetadata | undefined {
    if (!isObject(m)) {
      errors.push({ field: 'metadata', message: m === undefined ? 'Required value' : 'must be an object' });
      return undefined;
    }
    const out: JSONObject = {};
    const str = (k: string, check: (s: string) => boolean, required: boolean) => {
      const v = m[k] ?? undefined;
      if (v === undefined) {
        if (required) errors.push({ field: `metadata.${k}`, message: 'Required value' });
      } else if (typeof v !== 'string' || !check(v))
        errors.push({ field: `metadata.${k}`, message: `Invalid value: ${quote(v)}` });
      else out[k] = v;
    };
    str('name', isDNS1123Subdomain, true);
    str('namespace', isDNS1123Label, true);
    str('uid', () => true, false);
    str('resourceVersion', () => true, false);
    str('creationTimestamp', isDateTime, false);
    const g = m.generation ?? undefined;
    if (g !== undefined) {
      if (!Number.isSafeInteger(g) || (g as number) < 0)
        errors.push({ field: 'metadata.generation', message: `Invalid value: ${quote(g)}` });
      else out.generation = g;
    }
    const labels = m.labels ?? undefined;
    if (labels !== undefined) {
      if (!isObject(labels)) errors.push({ field: 'metadata.labels', message: 'must be an object' });
      else {
        for (const [k, v] of Object.entries(labels)) {
          if (v === null) continue;
          if (!isQualifiedName(k))
            errors.push({ field: 'metadata.labels', message: `Invalid value: ${quote(k)}` });
          if (typeof v !== 'string' || !isLabelValue(v))
            errors.push({ field: `metadata.labels[${k}]`, message: `Invalid value: ${quote(v)}` });
        }
        out.labels = Object.fromEntries(Object.entries(labels).filter(([, v]) => v !== null));
      }
    }
    return out as unknown as StoredMetadata;
  }

  /**
   * What a create of `obj` leads to: the stored object (defaulted, status dropped, metadata
   * reduced to the modelled fields), or the field errors.
   */
  admit(obj: unknown): { stored?: JSONObject; errors: FieldError[] } {
    const errors: FieldError[] = [];
    if (!isObject(obj)) return { errors: [{ field: '<root>', message: 'must be an object' }] };
    const o = clone(obj);
    if (o.apiVersion !== this.apiVersion)
      errors.push({ field: 'apiVersion', message: `Invalid value: ${quote(o.apiVersion)}` });
    if (o.kind !== this.crd.spec.names.kind)
      errors.push({ field: 'kind', message: `Invalid value: ${quote(o.kind)}` });
    const metadata = this.metadata(o.metadata, errors);
    delete o.status; // status subresource: a create cannot set it
    delete o.metadata;
    delete o.apiVersion;
    delete o.kind;
    const body = { ...o };
    const schema = this.schema;
    prune(body, schema, '', errors);
    applyDefaults(body, schema);
    const blocking = validate(body, schema, '', errors);
    if (!blocking) this.rules.run(body, schema, '', errors);
    if (errors.length) return { errors };
    return {
      stored: { apiVersion: this.apiVersion, kind: this.crd.spec.names.kind, metadata, ...body },
      errors,
    };
  }

  /** Validates a value against the schema of one top-level field, e.g. a status update. */
  validateField(field: string, value: unknown): FieldError[] {
    const errors: FieldError[] = [];
    const s = this.schema.properties![field]!;
    const v = clone(value);
    prune(v, s, field, errors);
    applyDefaults(v, s);
    if (!validate(v, s, field, errors)) this.rules.run(v, s, field, errors);
    return errors;
  }
}

// ---------------------------------------------------------------------------------------------
// Structural schema rules (apiextensions-apiserver/pkg/apiserver/schema)

/** Why a schema is not structural, or its defaults invalid; empty if it is fine. */
export function structuralProblems(root: Schema): string[] {
  const out: string[] = [];
  const allowed = new Set([
    'type',
    'description',
    'properties',
    'additionalProperties',
    'items',
    'required',
    'enum',
    'default',
    'nullable',
    'format',
    'minimum',
    'maximum',
    'minLength',
    'maxLength',
    'pattern',
    'minItems',
    'maxItems',
    'maxProperties',
    'x-kubernetes-list-type',
    'x-kubernetes-list-map-keys',
    'x-kubernetes-validations',
  ]);
  for (const [path, s] of schemaNodes(root)) {
    const at = path || '<root>';
    for (const k of Object.keys(s))
      if (!allowed.has(k)) out.push(`${at}: ${k} is not used in this CRD's schemas`);
    if (!s.type) out.push(`${at}: no type`);
    if (s.properties && s.additionalProperties !== undefined)
      out.push(`${at}: properties and additionalProperties together`);
    if (s.type === 'array' && !s.items) out.push(`${at}: array without items`);
    if ((s.properties || s.additionalProperties) && s.type !== 'object')
      out.push(`${at}: properties on a ${s.type}`);
    if (s['x-kubernetes-preserve-unknown-fields']) out.push(`${at}: preserves unknown fields`);
    for (const r of s.required ?? [])
      if (!s.properties?.[r]) out.push(`${at}: required ${r} is not a property`);
    const listType = s['x-kubernetes-list-type'];
    if (listType && s.type !== 'array') out.push(`${at}: list type on a ${s.type}`);
    if (listType === 'set' && s.items && ['object', 'array'].includes(s.items.type!))
      out.push(`${at}: a set of ${s.items.type}s`);
    if (listType === 'map') {
      const keys = s['x-kubernetes-list-map-keys'] ?? [];
      if (!keys.length) out.push(`${at}: map list without keys`);
      for (const k of keys)
        if (!s.items?.required?.includes(k) && s.items?.properties?.[k]?.default === undefined)
          out.push(`${at}: map key ${k} is neither required nor defaulted`);
    }
    if (s.type === 'array' && !listType) out.push(`${at}: no x-kubernetes-list-type`);
    if (path === 'metadata' && Object.keys(s).some((k) => k !== 'type'))
      out.push('metadata: only type may be set');
    if (path.startsWith('metadata.')) out.push(`${at}: metadata may not have properties`);
    if (s.default !== undefined) {
      if (path.startsWith('status')) out.push(`${at}: defaults in status`);
      const v = clone(s.default);
      const errors: FieldError[] = [];
      prune(v, s, path, errors);
      applyDefaults(v, s);
      validate(v, s, path, errors);
      for (const e of errors) out.push(`${at}: default ${quote(s.default)}: ${e.field}: ${e.message}`);
    }
    for (const r of s['x-kubernetes-validations'] ?? []) {
      if (r.fieldPath !== undefined && !resolveFieldPath(s, r.fieldPath))
        out.push(`${at}: rule ${quote(r.rule)} has fieldPath ${r.fieldPath}, which is not a field`);
      if (
        r.reason !== undefined &&
        !['FieldValueInvalid', 'FieldValueForbidden', 'FieldValueRequired', 'FieldValueDuplicate'].includes(
          r.reason,
        )
      )
        out.push(`${at}: rule ${quote(r.rule)} has reason ${r.reason}`);
      if ((r.message === undefined) === (r.messageExpression === undefined))
        out.push(`${at}: rule ${quote(r.rule)} needs exactly one of message and messageExpression`);
    }
  }
  return out;
}

/** The schema a `fieldPath` (`.weights`, `.match.zone`) names, relative to `s`. */
function resolveFieldPath(s: Schema, path: string): Schema | undefined {
  let node: Schema | undefined = s;
  for (const part of path.split('.').slice(1)) node = node?.properties?.[part];
  return node;
}
