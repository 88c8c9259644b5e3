/**
 * The two forms of the ProxyPolicy rules, the CRD (for the API server) and validateProxyPolicy
 * (for nftproxy), run on every fixture, every sample and random mutations of them, and must
 * agree: both accept with the same defaulted object, or both reject naming the same field.
 * The CRD side is test/support/crd-validator.ts, a model of the API server.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { parse } from 'yaml';
import {
  DEFAULT_AFFINITY_TIMEOUT_SECONDS,
  DEFAULT_MAGLEV_TABLE_SIZE,
  DEFAULT_WEIGHT,
  MAGLEV_TABLE_SIZES,
  MAX_AFFINITY_TIMEOUT_SECONDS,
  MAX_RANGES,
  MAX_SERVICE_NAMES,
  MAX_WEIGHT,
  MAX_WEIGHT_RULES,
  Masquerade,
  PLURAL,
  GROUP,
  KIND,
  VERSION,
  Scheduler,
  type PolicyProblem,
  type ProxyPolicy,
} from '../../src/api/types.js';
import { renderCRD } from '../../src/api/crd.js';
import { formatProblem, Patterns, validateProxyPolicy } from '../../src/api/validate.js';
import { formatCIDR, parseCIDR } from '../../src/net/ip.js';
import {
  CRDModel,
  k8sParseCIDR,
  schemaNodes,
  structuralProblems,
  type CRD,
  type FieldError,
  type Schema,
  type StoredMetadata,
} from '../support/crd-validator.js';

const file = (p: string) => fileURLToPath(new URL(`../../${p}`, import.meta.url));
const crd = parse(readFileSync(file('crds/proxypolicies.nftproxy.dev.yaml'), 'utf8')) as CRD;
const model = new CRDModel(crd);

interface Fixture {
  name: string;
  object: unknown;
  /** From `# field:`: the field the one mistake is in. */
  field?: string | undefined;
  /** From `# message:`: a part of validateProxyPolicy's message. */
  message?: string | undefined;
}

function load(dir: string): Fixture[] {
  return readdirSync(file(dir))
    .filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml')
    .sort()
    .map((f) => {
      const text = readFileSync(file(`${dir}/${f}`), 'utf8');
      const header = (key: string) => new RegExp(`^# ${key}: (.+)$`, 'm').exec(text)?.[1];
      return { name: f, object: parse(text) as unknown, field: header('field'), message: header('message') };
    });
}

const valid = load('test/fixtures/proxypolicy/valid');
const invalid = load('test/fixtures/proxypolicy/invalid');
const samples = load('config/samples');

/** Whether a reported field is the named one or lies below it (`matchLabels[app]` below `matchLabels`). */
const at = (reported: string, named: string) =>
  reported === named || reported.startsWith(`${named}.`) || reported.startsWith(`${named}[`);

const show = (problems: (PolicyProblem | FieldError)[]) => problems.map(formatProblem).join('\n  ') || 'none';

/**
 * The policy nftproxy would read from what the API server stored: the defaults that depend on
 * another field, which OpenAPI cannot state and the CRD only documents, and canonical CIDR text
 * (the API server keeps what was written: `2001:DB8::/32`).
 */
function policyFromStored(stored: Record<string, unknown>): ProxyPolicy {
  const m = stored.metadata as StoredMetadata;
  const spec = structuredClone(stored.spec) as ProxyPolicy['spec'];
  if (spec.scheduler.type === Scheduler.weighted) spec.scheduler.defaultWeight ??= DEFAULT_WEIGHT;
  if (spec.scheduler.type === Scheduler.maglev) spec.scheduler.tableSize ??= DEFAULT_MAGLEV_TABLE_SIZE;
  if (spec.sessionAffinity?.type === 'ClientIP')
    spec.sessionAffinity.timeoutSeconds ??= DEFAULT_AFFINITY_TIMEOUT_SECONDS;
  const canonical = (l: string[]) => l.map((c) => formatCIDR(parseCIDR(c)!));
  if (spec.sourceRanges?.allow) spec.sourceRanges.allow = canonical(spec.sourceRanges.allow);
  if (spec.sourceRanges?.deny) spec.sourceRanges.deny = canonical(spec.sourceRanges.deny);
  const metadata: ProxyPolicy['metadata'] = {
    namespace: m.namespace,
    name: m.name,
    generation: m.generation ?? 1,
    labels: m.labels ?? {},
  };
  for (const k of ['uid', 'resourceVersion', 'creationTimestamp'] as const)
    if (m[k] !== undefined) metadata[k] = m[k];
  return { metadata, spec };
}

/** Both validators on one object: they agree, and the policy if they accept. */
function both(obj: unknown): { policy?: ProxyPolicy | undefined; ours: PolicyProblem[]; api: FieldError[] } {
  const ours = validateProxyPolicy(obj);
  const api = model.admit(obj);
  const detail = `\nvalidateProxyPolicy: ${show(ours.problems)}\nCRD: ${show(api.errors)}\nobject: ${JSON.stringify(obj)}`;
  assert.equal(ours.policy !== undefined, api.stored !== undefined, `the validators disagree${detail}`);
  assert.equal(ours.policy === undefined, ours.problems.length > 0, `a policy xor problems${detail}`);
  if (ours.policy)
    assert.deepEqual(ours.policy, policyFromStored(api.stored!), `different policies${detail}`);
  return { policy: ours.policy, ours: ours.problems, api: api.errors };
}

const specSchema = model.schema.properties!.spec!;
const node = (path: string): Schema => {
  const found = [...schemaNodes(model.schema)].find(([p]) => p === path);
  assert.ok(found, `no schema at ${path}`);
  return found[1];
};

/** Evaluates a printer column's JSONPath (the subset used: fields and `[?(@.f=="v")]`). */
function jsonPath(obj: unknown, path: string): unknown {
  let values: unknown[] = [obj];
  for (const [, field, key, want] of path.matchAll(/\.(\w+)|\[\?\(@\.(\w+)=="([^"]*)"\)\]/g)) {
    const next = (o: unknown) =>
      o && typeof o === 'object' ? (o as Record<string, unknown>)[field!] : undefined;
    values = field
      ? values.map(next)
      : values
          .flatMap((v) => (Array.isArray(v) ? v : []))
          .filter((x) => (x as Record<string, unknown>)[key!] === want);
  }
  return values.filter((v) => v !== undefined)[0];
}

// ---------------------------------------------------------------------------------------------
// Random mutations of valid policies

type Path = (string | number)[];
type Mutation =
  | { op: 'delete'; pick: number }
  | { op: 'set'; pick: number; value: unknown }
  | { op: 'add'; pick: number; key: string; value: unknown }
  | { op: 'push'; pick: number; value: unknown };

/** The ObjectMeta fields both validators read; the others are left alone (see the fuzz test). */
const MODELLED_METADATA = new Set([
  'name',
  'namespace',
  'labels',
  'generation',
  'uid',
  'resourceVersion',
  'creationTimestamp',
]);

function paths(v: unknown, prefix: Path = []): Path[] {
  if (v === null || typeof v !== 'object') return [];
  const out: Path[] = [];
  const entries: [string | number, unknown][] = Array.isArray(v)
    ? v.map((x, i) => [i, x])
    : Object.entries(v);
  for (const [k, x] of entries) {
    if (prefix.length === 0 && k === 'status') continue;
    if (prefix.length === 1 && prefix[0] === 'metadata' && !MODELLED_METADATA.has(k as string)) continue;
    out.push([...prefix, k], ...paths(x, [...prefix, k]));
  }
  return out;
}

function parentOf(root: unknown, path: Path): Record<string | number, unknown> {
  let o = root as Record<string | number, unknown>;
  for (const k of path.slice(0, -1)) o = o[k] as Record<string | number, unknown>;
  return o;
}

/** Sets a key as JSON.parse would: `__proto__` becomes an own field, not the prototype. */
const put = (o: Record<string | number, unknown>, k: string | number, value: unknown) =>
  Object.defineProperty(o, k, { value, enumerable: true, writable: true, configurable: true });

function mutate(obj: unknown, m: Mutation): void {
  const all = paths(obj);
  const pick = <T>(list: T[]) => list[m.pick % list.length];
  if (m.op === 'delete' || m.op === 'set') {
    const path = pick(all);
    if (!path) return;
    const parent = parentOf(obj, path);
    const key = path.at(-1)!;
    if (m.op === 'set') put(parent, key, m.value);
    else if (Array.isArray(parent)) parent.splice(key as number, 1);
    else delete parent[key];
  } else {
    const containers = [[], ...all].filter((p) => {
      const v = p.length ? parentOf(obj, p)[p.at(-1)!] : obj;
      return m.op === 'push' ? Array.isArray(v) : v !== null && typeof v === 'object' && !Array.isArray(v);
    });
    const path = pick(containers);
    if (!path) return;
    const target = (path.length ? parentOf(obj, path)[path.at(-1)!] : obj) as Record<string, unknown>;
    if (m.op === 'push') (target as unknown as unknown[]).push(m.value);
    else put(target, m.key, m.value);
  }
}

const fieldNames = [
  ...new Set([...schemaNodes(model.schema)].flatMap(([, s]) => Object.keys(s.properties ?? {}))),
];
const cidrText = fc.oneof(
  fc
    .tuple(fc.oneof(fc.ipV4(), fc.ipV6(), fc.ipV4Extended()), fc.integer({ min: 0, max: 130 }))
    .map(([a, n]) => `${a}/${n}`),
  fc.stringMatching(/^[0-9a-fA-F:.%]{0,12}\/0?[0-9]{1,3}$/),
  fc.constantFrom(
    '10.0.0.0/8',
    '10.0.0.1/8',
    '::/0',
    '::ffff:10.0.0.0/104',
    '::1.2.3.0/120',
    '2001:DB8::/32',
    '1::/16',
  ),
);
const labelish = fc.stringMatching(/^[-a-zA-Z0-9_./ ]{0,16}$/);
const scalar = fc.oneof(
  fc.constantFrom<unknown>(
    ...Object.values(Scheduler),
    ...Object.values(Masquerade),
    'None',
    'ClientIP',
    'In',
    'NotIn',
    'Exists',
    'DoesNotExist',
    'web',
    'Web',
    '',
    'shop',
    ...MAGLEV_TABLE_SIZES,
    0,
    1,
    100,
    101,
    -1,
    86400,
    86401,
    2.5,
    true,
    null,
    'nftproxy.dev/v1alpha1',
    'ProxyPolicy',
    '2025-01-02T03:04:05Z',
    'a'.repeat(64),
  ),
  cidrText,
  labelish,
  fc.integer({ min: -3, max: 5000 }),
);
const value = fc.oneof(
  { weight: 4, arbitrary: scalar },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2 }) },
  { weight: 1, arbitrary: fc.array(scalar, { maxLength: 3 }) },
  {
    weight: 1,
    arbitrary: fc.dictionary(fc.constantFrom(...fieldNames, 'app', 'zone-a'), scalar, { maxKeys: 2 }),
  },
);
const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant('delete' as const), pick: fc.nat() }),
  fc.record({ op: fc.constant('set' as const), pick: fc.nat(), value }),
  fc.record({
    op: fc.constant('add' as const),
    pick: fc.nat(),
    key: fc.constantFrom(...fieldNames, 'foo', '__proto__', 'constructor', 'toString', 'hasOwnProperty'),
    value,
  }),
  fc.record({ op: fc.constant('push' as const), pick: fc.nat(), value }),
);

// ---------------------------------------------------------------------------------------------

describe('ProxyPolicy: the CRD and validateProxyPolicy agree', () => {
  describe('the CRD', () => {
    it('is what src/api/model.ts generates (npm run crd)', () => {
      assert.equal(
        readFileSync(file('crds/proxypolicies.nftproxy.dev.yaml'), 'utf8'),
        renderCRD(),
        'crds/proxypolicies.nftproxy.dev.yaml is out of date: run npm run crd',
      );
    });

    it('names the group, kind and version of src/api/types.ts, namespaced, with a status subresource', () => {
      assert.equal(crd.spec.group, GROUP);
      assert.equal(crd.spec.names.kind, KIND);
      assert.equal(crd.spec.names.plural, PLURAL);
      assert.equal(crd.spec.scope, 'Namespaced');
      assert.deepEqual(
        crd.spec.versions.map((v) => v.name),
        [VERSION],
      );
      assert.deepEqual(crd.spec.versions[0]!.subresources?.status, {});
    });

    it('has a structural schema, with valid defaults and CEL rules that name real fields', () => {
      assert.deepEqual(structuralProblems(model.schema), []);
      // The checker can fail: a schema with the usual mistakes.
      const bad: Schema = {
        type: 'object',
        properties: {
          a: {
            type: 'object',
            properties: { x: { type: 'string' } },
            additionalProperties: { type: 'string' },
          },
          b: { properties: {} },
          c: { type: 'string', enum: ['x'], default: 'y' },
          d: { type: 'array', items: { type: 'string' } },
          e: {
            type: 'object',
            properties: {},
            'x-kubernetes-validations': [{ rule: 'true', message: 'm', fieldPath: '.nope' }],
          },
        },
      };
      const found = structuralProblems(bad);
      for (const k of ['a', 'b', 'c', 'd', 'e'])
        assert.ok(
          found.some((p) => p.startsWith(`${k}:`)),
          `${k}: ${found.join('\n')}`,
        );
    });

    it('type-checks every CEL rule to bool and every messageExpression to string', () => {
      let rules = 0;
      for (const compiled of model.rules.byNode.values()) {
        for (const r of compiled) {
          rules++;
          assert.ok(r.check.valid, `${r.rule.rule}: ${r.check.error?.message}`);
          assert.equal(r.check.type, 'bool', r.rule.rule);
          if (r.messageCheck) assert.equal(r.messageCheck.type, 'string', r.rule.messageExpression);
        }
      }
      assert.ok(rules >= 15, `${rules} rules`);
    });

    it('bounds everything a CEL rule can iterate, so the cost estimator accepts it', () => {
      // The API server multiplies a rule's cost by how often it can run (the maxItems and
      // maxProperties above it) and sizes what it reads from maxLength, maxItems and
      // maxProperties; unbounded, it assumes a 3 MiB request and refuses the CRD.
      for (const [path, s] of schemaNodes(model.schema)) {
        if (!s['x-kubernetes-validations']) continue;
        for (const [below, d] of schemaNodes(s, path)) {
          if (d.type === 'string')
            assert.ok(d.maxLength !== undefined || d.enum, `${below}: string without maxLength`);
          if (d.type === 'array') assert.ok(d.maxItems !== undefined, `${below}: array without maxItems`);
          if (d.type === 'object' && d.additionalProperties)
            assert.ok(d.maxProperties !== undefined, `${below}: map without maxProperties`);
        }
        let runs = 1;
        for (const [p, a] of schemaNodes(model.schema))
          if (path.startsWith(`${p}[*]`)) runs *= a.maxItems ?? a.maxProperties ?? Infinity;
        assert.ok(runs <= 64 * 64, `${path}: rules run up to ${runs} times`);
      }
    });

    it('states the limits, enums and patterns of src/api, and the defaults nftproxy applies on read', () => {
      const sched = node('spec.scheduler');
      assert.deepEqual(node('spec.scheduler.type').enum, Object.values(Scheduler));
      assert.equal(node('spec.scheduler.type').default, Scheduler.random);
      assert.deepEqual(sched.default, {});
      assert.deepEqual(node('spec.masquerade').enum, Object.values(Masquerade));
      assert.equal(node('spec.masquerade').default, Masquerade.auto);
      assert.deepEqual(node('spec.scheduler.tableSize').enum, [...MAGLEV_TABLE_SIZES]);
      assert.equal(node('spec.scheduler.weights').maxItems, MAX_WEIGHT_RULES);
      assert.equal(node('spec.scheduler.weights[*].weight').maximum, MAX_WEIGHT);
      assert.equal(node('spec.scheduler.defaultWeight').maximum, MAX_WEIGHT);
      assert.equal(node('spec.sessionAffinity.timeoutSeconds').maximum, MAX_AFFINITY_TIMEOUT_SECONDS);
      assert.equal(node('spec.selector.serviceNames').maxItems, MAX_SERVICE_NAMES);
      assert.equal(node('spec.sourceRanges.allow').maxItems, MAX_RANGES);
      assert.equal(node('spec.sourceRanges.deny').maxItems, MAX_RANGES);
      assert.equal(node('spec.selector.serviceNames[*]').pattern, Patterns.dns1035Label);
      assert.equal(node('spec.selector.serviceSelector.matchLabels[*]').pattern, Patterns.labelValue);
      assert.ok(
        node('spec.selector.serviceSelector.matchLabels')['x-kubernetes-validations']![0]!.rule.includes(
          Patterns.labelKey,
        ),
      );
      assert.equal(node('spec.selector.serviceSelector.matchExpressions[*].key').pattern, Patterns.labelKey);
      assert.equal(
        node('spec.selector.serviceSelector.matchExpressions[*].values[*]').pattern,
        Patterns.labelValue,
      );
      assert.equal(node('spec.scheduler.weights[*].match.zone').pattern, Patterns.labelValue);
      assert.equal(node('spec.scheduler.weights[*].match.node').pattern, Patterns.dns1123Subdomain);
      assert.equal(node('spec.scheduler.weights[*].match.hostname').pattern, Patterns.dns1123Label);
      assert.equal(node('spec.scheduler.weights[*].match.targetRef').pattern, Patterns.dns1123Subdomain);
      // Defaults that depend on another field: only documented in the CRD, applied on read.
      assert.match(
        node('spec.scheduler.defaultWeight').description!,
        new RegExp(`Default ${DEFAULT_WEIGHT}\\.`),
      );
      assert.match(
        node('spec.scheduler.tableSize').description!,
        new RegExp(`Default ${DEFAULT_MAGLEV_TABLE_SIZE}\\.`),
      );
      assert.match(
        node('spec.sessionAffinity.timeoutSeconds').description!,
        new RegExp(`Default ${DEFAULT_AFFINITY_TIMEOUT_SECONDS}\\b`),
      );
      assert.deepEqual(specSchema.required, ['selector']);
    });

    it('has printer columns that name existing fields of the right type', () => {
      const columns = crd.spec.versions[0]!.additionalPrinterColumns!;
      assert.deepEqual(
        columns.map((c) => c.name),
        ['Scheduler', 'Services', 'Programmed', 'Age'],
      );
      const typeOf = (path: string): string | undefined => {
        if (path === '.metadata.creationTimestamp') return 'date'; // ObjectMeta, not in the schema
        let s: Schema | undefined = model.schema;
        for (const [, field, key] of path.matchAll(/\.(\w+)|\[\?\(@\.(\w+)==/g)) {
          if (field) s = s?.properties?.[field];
          else if (s?.items?.properties?.[key!]) s = s.items;
          else return undefined;
        }
        return s?.format === 'date-time' ? 'date' : s?.type;
      };
      for (const c of columns) assert.equal(typeOf(c.jsonPath), c.type, `${c.name}: ${c.jsonPath}`);
      // And they show what they should on a stored object with status.
      const stored = valid.find((f) => f.name === 'as-stored.yaml')!.object as Record<string, unknown>;
      const shown = columns.map((c) => jsonPath(stored, c.jsonPath));
      assert.deepEqual(shown, ['roundRobin', 2, undefined, '2025-01-02T03:04:05Z']);
      const programmed = structuredClone(stored);
      (programmed.status as { conditions: unknown[] }).conditions.push({
        type: 'Programmed',
        status: 'False',
      });
      assert.equal(jsonPath(programmed, columns[2]!.jsonPath), 'False');
    });

    it('takes a status as the controller and each node write it, and refuses malformed ones', () => {
      const status = structuredClone(
        (valid.find((f) => f.name === 'as-stored.yaml')!.object as { status: unknown }).status,
      );
      assert.deepEqual(model.validateField('status', status), []);
      const nodes = node('status.nodes');
      assert.ok(
        typeof nodes.additionalProperties === 'object',
        'nodes is a map, each node merge-patches its key',
      );
      type Entry = Record<string, unknown>;
      type Status = { servicesSelected: number; conditions: Entry[]; nodes: Record<string, Entry> };
      const bad: [string, (s: Status) => void][] = [
        ['status.conditions[0].status', (s) => (s.conditions[0]!.status = 'Maybe')],
        ['status.conditions[1]', (s) => s.conditions.push({ ...s.conditions[0] })],
        ['status.conditions[0].reason', (s) => (s.conditions[0]!.reason = 'not a reason')],
        ['status.conditions[0].lastTransitionTime', (s) => delete s.conditions[0]!.lastTransitionTime],
        ['status.nodes[node1].lastUpdateTime', (s) => (s.nodes.node1!.lastUpdateTime = 'yesterday')],
        ['status.nodes[node1].programmed', (s) => (s.nodes.node1!.programmed = 'yes')],
        ['status.nodes[node1].extra', (s) => (s.nodes.node1!.extra = 1)],
        ['status.servicesSelected', (s) => (s.servicesSelected = -1)],
      ];
      for (const [field, breakIt] of bad) {
        const s = structuredClone(status) as Status;
        breakIt(s);
        const errors = model.validateField('status', s);
        assert.ok(
          errors.some((e) => at(e.field, field)),
          `${field}: ${show(errors)}`,
        );
      }
    });

    it('parses CIDRs as Kubernetes does', () => {
      for (const ok of [
        '10.0.0.0/8',
        '::/0',
        '2001:DB8::/32',
        '::1.2.3.0/120',
        '1:2:3:4:5:6:7::/128',
        '10.0.0.1/8',
      ])
        assert.ok(k8sParseCIDR(ok), ok);
      for (const bad of [
        '10.0.0.0',
        '10.0.0.0/08',
        '010.0.0.0/8',
        '::ffff:1.2.3.0/120',
        'fe80::%eth0/64',
        '1::2::3/64',
        '1:2:3:4:5:6:7:8::/128',
        '10.0.0.0/33',
        '1.2.3.4/+8',
      ])
        assert.equal(k8sParseCIDR(bad), undefined, bad);
    });
  });

  describe('fixtures and samples', () => {
    it('has enough of them', () => {
      assert.ok(valid.length >= 10, `${valid.length} valid fixtures`);
      assert.ok(invalid.length >= 25, `${invalid.length} invalid fixtures`);
      assert.equal(samples.length, 9);
      for (const f of invalid) assert.ok(f.field, `${f.name} has no "# field:" line`);
    });

    for (const f of [...valid, ...samples.map((s) => ({ ...s, name: `sample ${s.name}` }))]) {
      it(`accepts ${f.name}, both with the same policy`, () => {
        const r = both(f.object);
        assert.ok(r.policy, `rejected:\n  ${show(r.ours)}`);
      });
    }

    for (const f of invalid) {
      it(`rejects ${f.name} at ${f.field}`, () => {
        const r = both(f.object);
        assert.equal(r.policy, undefined);
        // One mistake each: every problem is about the named field.
        for (const [who, problems] of [
          ['validateProxyPolicy', r.ours],
          ['the CRD', r.api],
        ] as const) {
          assert.ok(
            problems.length > 0 && problems.every((p) => at(p.field, f.field!)),
            `${who}:\n  ${show(problems)}`,
          );
        }
        if (f.message)
          assert.ok(
            r.ours.some((p) => p.message.includes(f.message!)),
            `no message with ${JSON.stringify(f.message)}:\n  ${show(r.ours)}`,
          );
      });
    }

    it('applies the defaults, including those that depend on another field', () => {
      const policy = (name: string) =>
        validateProxyPolicy(valid.find((f) => f.name === name)!.object).policy!;
      const scheduler = (name: string) => policy(name).spec.scheduler as Record<string, unknown>;
      assert.deepEqual(policy('minimal.yaml'), {
        metadata: { namespace: 'shop', name: 'minimal', generation: 1, labels: {} },
        spec: { selector: { serviceNames: ['web'] }, scheduler: { type: 'random' }, masquerade: 'auto' },
      });
      assert.equal(scheduler('weighted-zone.yaml').defaultWeight, DEFAULT_WEIGHT);
      assert.equal(scheduler('weighted-every-match.yaml').defaultWeight, 0);
      assert.equal(scheduler('maglev-default-table.yaml').tableSize, DEFAULT_MAGLEV_TABLE_SIZE);
      assert.equal(scheduler('maglev-table-4093.yaml').tableSize, 4093);
      assert.deepEqual(policy('affinity-client-ip-default-timeout.yaml').spec.sessionAffinity, {
        type: 'ClientIP',
        timeoutSeconds: DEFAULT_AFFINITY_TIMEOUT_SECONDS,
      });
      assert.deepEqual(policy('affinity-none-masquerade-never.yaml').spec.sessionAffinity, { type: 'None' });
      const nulls = policy('nulls-are-absent.yaml').spec;
      assert.deepEqual(nulls.scheduler, { type: 'random' });
      assert.equal(nulls.masquerade, 'auto');
      assert.deepEqual(nulls.selector, { serviceNames: ['web'] });
      assert.deepEqual(policy('as-stored.yaml').metadata, {
        namespace: 'shop',
        name: 'from-server',
        uid: '6f1a7c2e-0d55-4c1b-9f43-0c2b7a9d1e11',
        generation: 3,
        resourceVersion: '48213',
        creationTimestamp: '2025-01-02T03:04:05Z',
        labels: { team: 'payments', constructor: 'x' },
      });
    });

    it('returns canonical CIDRs', () => {
      const ranges = validateProxyPolicy(
        valid.find((f) => f.name === 'source-ranges-allow-deny.yaml')!.object,
      ).policy!.spec.sourceRanges;
      assert.deepEqual(ranges, {
        allow: ['10.0.0.0/8', '192.168.1.0/24', '2001:db8::/32', '::/0', '0.0.0.0/0', '1.2.3.4/32'],
        deny: ['10.66.0.0/16', '2001:db8:66::/48', '::1.2.3.0/120'],
      });
    });
  });

  describe('validateProxyPolicy', () => {
    const base = () => ({
      apiVersion: 'nftproxy.dev/v1alpha1',
      kind: 'ProxyPolicy',
      metadata: { name: 'p', namespace: 'shop' },
      spec: { selector: { serviceNames: ['web'] } } as Record<string, unknown>,
    });

    it('reports every problem with its field path and the bad value', () => {
      const obj = base();
      obj.spec = {
        selector: { serviceNames: ['web', 'Web'] },
        scheduler: {
          type: 'weighted',
          weights: [
            { match: { zone: 'a' }, weight: 1 },
            { match: { node: 'n' }, weight: 101 },
          ],
        },
        sessionAffinity: { type: 'ClientIP', timeoutSeconds: '60' },
        sourceRanges: { allow: ['10.0.0.300/8'], deny: ['10.1.2.3/16'] },
        masquerade: 'no',
        extra: true,
      };
      assert.deepEqual(validateProxyPolicy(obj).problems.map(formatProblem).sort(), [
        `spec.extra: unknown field`,
        `spec.masquerade: must be one of "auto", "always", "never"; not "no"`,
        `spec.scheduler.weights[1].weight: must be from 0 to 100, not 101`,
        `spec.selector.serviceNames[1]: not a valid Service name (lower case letters, digits and '-', starting with a letter): "Web"`,
        `spec.sessionAffinity.timeoutSeconds: must be an integer, not "60"`,
        `spec.sourceRanges.allow[0]: not a valid CIDR: "10.0.0.300/8"`,
        `spec.sourceRanges.deny[0]: host bits set in "10.1.2.3/16": the network is 10.1.0.0/16`,
      ]);
    });

    it('keeps label keys that are also names of Object.prototype, and refuses __proto__', () => {
      const obj = base();
      obj.spec = {
        selector: { serviceSelector: { matchLabels: { constructor: 'a', toString: 'b', app: 'web' } } },
      };
      assert.deepEqual(validateProxyPolicy(obj).policy?.spec.selector, {
        serviceSelector: { matchLabels: { constructor: 'a', toString: 'b', app: 'web' } },
      });
      const proto = JSON.parse(
        '{"apiVersion":"nftproxy.dev/v1alpha1","kind":"ProxyPolicy","metadata":{"name":"p","namespace":"s"},' +
          '"spec":{"selector":{"serviceSelector":{"matchLabels":{"__proto__":"x"}}},"__proto__":{"a":1},"constructor":1}}',
      ) as unknown;
      assert.deepEqual(validateProxyPolicy(proto).problems.map(formatProblem).sort(), [
        'spec.__proto__: unknown field',
        'spec.constructor: unknown field',
        `spec.selector.serviceSelector.matchLabels: not a valid label key (a name of at most 63 characters, optionally after a DNS subdomain and '/'): "__proto__"`,
      ]);
      assert.equal(({} as Record<string, unknown>).a, undefined, 'no prototype was polluted');
    });

    it('never throws, whatever it is given, and neither mutates nor shares its input', () => {
      const cyclic: Record<string, unknown> = base();
      (cyclic.spec as Record<string, unknown>).selector = cyclic;
      let deep: unknown = 'x';
      for (let i = 0; i < 10_000; i++) deep = [deep];
      const throwing = new Proxy(
        {},
        {
          ownKeys: () => {
            throw new Error('no keys');
          },
        },
      );
      const getter = base();
      Object.defineProperty(getter.metadata, 'name', {
        enumerable: true,
        get: () => {
          throw new Error('no name');
        },
      });
      const hostile: unknown[] = [
        undefined,
        null,
        0,
        'policy',
        [],
        [base()],
        () => 1,
        Symbol('s'),
        10n,
        new Date(),
        new Map(),
        Object.create(null),
        { ...base(), spec: deep },
        cyclic,
        throwing,
        { ...base(), spec: throwing },
        getter,
        { ...base(), spec: { selector: { serviceNames: new Array(100_000).fill('web') } } },
        { ...base(), spec: { selector: { serviceNames: [NaN, Infinity, undefined, 1n] } } },
        { ...base(), metadata: new Date() },
        { ...base(), spec: new (class Spec {})() },
      ];
      for (const [i, input] of hostile.entries()) {
        const r = validateProxyPolicy(input);
        assert.equal(r.policy, undefined, `input ${i}`);
        assert.ok(r.problems.length > 0);
      }
      const obj = base();
      const before = JSON.stringify(obj);
      const policy = validateProxyPolicy(obj).policy!;
      assert.equal(JSON.stringify(obj), before);
      policy.spec.selector.serviceNames!.push('x');
      assert.equal(JSON.stringify(obj), before);
    });

    it('accepts exactly the CIDRs Kubernetes accepts, with host bits clear', () => {
      // Kubernetes parses with Go's netip (modelled in crd-validator.ts); we with src/net/ip.ts.
      const text = fc.oneof(
        cidrText,
        fc.oneof(fc.ipV4(), fc.ipV4Extended()).map((a) => `${a}/32`),
        fc.ipV6().map((a) => `${a}/128`),
        fc.stringMatching(/^[0-9a-fA-F:.]{0,40}$/).map((a) => `${a}/128`),
        fc.stringMatching(/^(::|[0:]{0,6})(ffff|FFFF|0)?:?[0-9.]{0,16}$/).map((a) => `${a}/128`),
      );
      let accepted = 0;
      fc.assert(
        fc.property(text, fc.boolean(), (cidr, deny) => {
          const obj = base();
          obj.spec.sourceRanges = { [deny ? 'deny' : 'allow']: [cidr] };
          if (both(obj).policy) accepted++;
        }),
        { numRuns: 3000 },
      );
      // About 335 of 3000 are valid (sd 18): the bound only checks that valid inputs come up at all.
      assert.ok(accepted > 200, `${accepted} accepted`);
    });

    it('accepts exactly the label keys and values Kubernetes accepts', () => {
      const segment = fc.stringMatching(/^[-a-zA-Z0-9_.]{0,8}$/);
      const long = (n: number) =>
        fc.constantFrom('a'.repeat(n), `${'a'.repeat(n - 2)}-b`, `a.${'b'.repeat(n - 2)}`);
      const part = fc.oneof(segment, long(63), long(64), fc.constantFrom('', '-', 'a_b', 'A.b', 'x y'));
      const key = fc.oneof(
        part,
        fc
          .tuple(fc.oneof(part, long(253), long(254), fc.constant('example.com')), part)
          .map(([p, n]) => `${p}/${n}`),
        fc.tuple(part, part, part).map((p) => p.join('/')),
      );
      let accepted = 0;
      fc.assert(
        fc.property(
          key,
          part,
          fc.constantFrom('labels', 'matchLabels', 'matchExpressions'),
          (k, v, where) => {
            const obj = base();
            if (where === 'labels') Object.assign(obj.metadata, { labels: { [k]: v } });
            else if (where === 'matchLabels')
              obj.spec.selector = { serviceSelector: { matchLabels: { [k]: v } } };
            else
              obj.spec.selector = {
                serviceSelector: { matchExpressions: [{ key: k, operator: 'In', values: [v] }] },
              };
            if (both(obj).policy) accepted++;
          },
        ),
        { numRuns: 3000 },
      );
      // About 335 of 3000 are valid (sd 18): the bound only checks that valid inputs come up at all.
      assert.ok(accepted > 200, `${accepted} accepted`);
    });

    it('never throws on random mutations of valid policies, and agrees with the CRD on every one', () => {
      // Left out, because the API server model does not cover them or no input can carry them:
      // ObjectMeta fields other than MODELLED_METADATA (validateProxyPolicy ignores them; the API
      // server decodes them with rules of its own), `status` (both drop it on create: status
      // subresource), and numbers JSON cannot carry (NaN, Infinity) or JavaScript cannot hold
      // exactly (beyond 2^53).
      const seeds = [...valid, ...samples].map((f) => JSON.stringify(f.object));
      let accepted = 0;
      fc.assert(
        fc.property(
          fc.constantFrom(...seeds),
          fc.array(mutation, { minLength: 1, maxLength: 3 }),
          (seed, mutations) => {
            const obj = JSON.parse(seed) as unknown;
            for (const m of mutations) mutate(obj, m);
            if (both(obj).policy) accepted++;
          },
        ),
        { numRuns: 3000 },
      );
      // Both outcomes are exercised, not only rejections.
      assert.ok(accepted > 100 && accepted < 2900, `${accepted} of 3000 accepted`);
    });
  });
});
