/**
 * The ProxyPolicy CRD, generated: its openAPIV3Schema comes from the decorators of the model
 * (src/api/model.ts) through class-validator-jsonschema, turned into a structural Kubernetes
 * schema (no `$ref`, list types, CEL rules where the model's cross-field rules sit); names,
 * printer columns and the status schema (which nftproxy writes, never reads) are stated here.
 * `npm run crd` writes crds/proxypolicies.nftproxy.dev.yaml; a test checks it is up to date.
 */
import { defaultMetadataStorage } from 'class-transformer/cjs/storage.js';
import { getMetadataStorage, ValidationTypes } from 'class-validator';
import { validationMetadatasToSchemas } from 'class-validator-jsonschema';
import { stringify } from 'yaml';
import {
  constraintSchemas,
  type CelRule,
  MODEL_CLASSES,
  ProxyPolicyFields,
  SchemaMark,
  SpecFields,
} from './model.js';
import { GROUP, KIND, PLURAL, VERSION } from './types.js';

/** Converters of class-validator-jsonschema: a constraint's schema, by constraint name. */
type Converters = NonNullable<
  NonNullable<Parameters<typeof validationMetadatasToSchemas>[0]>['additionalConverters']
>;
/** What a converter is given: one constraint of one property. */
interface ConstraintMeta {
  propertyName: string;
  constraints: unknown[];
}

/** A JSON schema node, as far as a CRD uses it. */
type Node = Record<string, unknown>;

/** class-validator's constraints as the schema keywords the API server knows. */
function converters(): Converters {
  const constant = (v: unknown[]) => (typeof v[0] === 'string' ? 'string' : 'integer');
  const out: Record<string, Node | ((meta: ConstraintMeta) => Node)> = {
    [ValidationTypes.IS_DEFINED]: {},
    [ValidationTypes.CONDITIONAL_VALIDATION]: {},
    [ValidationTypes.WHITELIST]: {},
    isString: { type: 'string' },
    isInt: { type: 'integer' },
    isObject: { type: 'object' },
    isArray: { type: 'array' },
    min: (m) => ({ minimum: m.constraints[0] as number }),
    max: (m) => ({ maximum: m.constraints[0] as number }),
    arrayMinSize: (m) => ({ minItems: m.constraints[0] as number }),
    arrayMaxSize: (m) => ({ maxItems: m.constraints[0] as number }),
    // Kubernetes has no uniqueItems: a set-typed list refuses duplicates.
    arrayUnique: { 'x-kubernetes-list-type': 'set' },
    isIn: (m) => {
      const values = m.constraints[0] as unknown[];
      return { type: constant(values), enum: values };
    },
  };
  for (const [name, schema] of constraintSchemas)
    out[name] = (m) =>
      tagRules(schema((m.constraints as unknown[] | undefined) ?? [], m.propertyName) as Node, name);
  return out as unknown as Converters;
}

/** Where a constraint's CEL rules wait until `structural` collects them. */
const RULES = 'x-nftproxy-rules:';
const PARENT_RULES = `${SchemaMark.parentRules}:`;

/**
 * A constraint's CEL rules under a key of its own: class-validator-jsonschema merges the
 * schemas of a property's constraints with lodash.merge, which would merge two constraints'
 * rule lists item by item.
 */
function tagRules(n: Node, name: string): Node {
  const { 'x-kubernetes-validations': own, [SchemaMark.parentRules]: parent, ...rest } = n;
  return {
    ...rest,
    ...(own ? { [RULES + name]: own } : {}),
    ...(parent ? { [PARENT_RULES + name]: parent } : {}),
  };
}

/** The rules gathered under keys starting with `prefix`, and the node without those keys. */
function takeRules(n: Node, prefix: string): [CelRule[], Node] {
  const found: CelRule[] = [];
  const rest: Node = {};
  for (const [k, v] of Object.entries(n)) {
    if (k.startsWith(prefix)) found.push(...(v as CelRule[]));
    else rest[k] = v;
  }
  return [found, rest];
}

const isNode = (v: unknown): v is Node => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The order keys are written in: what a reader looks for first. */
const KEY_ORDER = [
  'description',
  'type',
  'format',
  'required',
  'default',
  'enum',
  'minimum',
  'maximum',
  'minLength',
  'maxLength',
  'pattern',
  'minItems',
  'maxItems',
  'maxProperties',
  'x-kubernetes-list-type',
  'items',
  'properties',
  'additionalProperties',
  'x-kubernetes-validations',
];

function ordered(n: Node): Node {
  const keys = Object.keys(n).sort((a, b) => KEY_ORDER.indexOf(a) - KEY_ORDER.indexOf(b));
  return Object.fromEntries(keys.map((k) => [k, n[k]]));
}

/**
 * A schema of class-validator-jsonschema's as Kubernetes takes it: `$ref`s inlined, maps as
 * `additionalProperties`, lists atomic unless sets, defaults from the classes' initial values,
 * rules about a property moved up to its object.
 */
function structural(n: Node, definitions: Record<string, Node>, defaults: Record<string, Node>): Node {
  let node: Node = { ...n };
  const ref = node.$ref;
  if (typeof ref === 'string') {
    const name = ref.replace('#/definitions/', '');
    const { $ref: _, ...siblings } = node;
    const target = definitions[name]!;
    node = {
      ...target,
      ...siblings,
      properties: Object.fromEntries(
        Object.entries((target.properties as Record<string, Node>) ?? {}).map(([k, v]) => [
          k,
          defaults[name]?.[k] === undefined ? v : { ...v, default: defaults[name]![k] },
        ]),
      ),
    };
  }
  const [cel, untagged] = takeRules(node, RULES);
  node = untagged;
  if (cel.length) node['x-kubernetes-validations'] = cel;
  if (node[SchemaMark.map]) {
    const { [SchemaMark.map]: _, items, ...rest } = node;
    node = { ...rest, type: 'object', additionalProperties: items };
  }
  if (node.type === 'array' && node['x-kubernetes-list-type'] === undefined)
    node['x-kubernetes-list-type'] = 'atomic';
  for (const key of ['items', 'additionalProperties']) {
    if (isNode(node[key])) node[key] = structural(node[key] as Node, definitions, defaults);
  }
  if (isNode(node.properties)) {
    const lifted: CelRule[] = [];
    const props: Record<string, Node> = {};
    for (const [k, v] of Object.entries(node.properties as Record<string, Node>)) {
      const [up, own] = takeRules(v, PARENT_RULES);
      lifted.push(...up);
      props[k] = structural(own, definitions, defaults);
    }
    node.properties = props;
    if (lifted.length)
      node['x-kubernetes-validations'] = [
        ...((node['x-kubernetes-validations'] as CelRule[] | undefined) ?? []),
        ...lifted,
      ];
  }
  if (Array.isArray(node.required) && node.required.length === 0) delete node.required;
  return ordered(node);
}

/** The initial values of each class's properties: the CRD's defaults (nested objects: `{}`). */
function defaultsOf(): Record<string, Node> {
  const out: Record<string, Node> = {};
  for (const cls of MODEL_CLASSES) {
    const fresh = new (cls as unknown as new () => Record<string, unknown>)();
    const d: Node = {};
    for (const [k, v] of Object.entries(fresh)) {
      if (v === undefined || v instanceof Map) continue;
      d[k] = MODEL_CLASSES.some((c) => v instanceof c) ? {} : v;
    }
    out[cls.name] = d;
  }
  return out;
}

/** The model's classes as class-validator-jsonschema makes them, by class name. */
function modelSchemas(): Record<string, Node> {
  return validationMetadatasToSchemas({
    classValidatorMetadataStorage: getMetadataStorage(),
    classTransformerMetadataStorage: defaultMetadataStorage,
    additionalConverters: converters(),
  }) as Record<string, Node>;
}

const dateTime = { type: 'string', format: 'date-time' };
const generation = { type: 'integer', format: 'int64', minimum: 0 };

/** What nftproxy writes in status (the controller its conditions, each node its own key). */
const STATUS_SCHEMA = {
  type: 'object',
  properties: {
    observedGeneration: { description: 'The generation of the spec that status reports on.', ...generation },
    servicesSelected: {
      description: 'How many Services the policy selects and wins.',
      type: 'integer',
      format: 'int32',
      minimum: 0,
    },
    conditions: {
      description: 'Accepted (the spec is valid and in force) and Programmed (on every node).',
      type: 'array',
      maxItems: 8,
      'x-kubernetes-list-type': 'map',
      'x-kubernetes-list-map-keys': ['type'],
      items: {
        type: 'object',
        required: ['type', 'status', 'lastTransitionTime', 'reason', 'message'],
        properties: {
          type: {
            type: 'string',
            maxLength: 316,
            pattern:
              '^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$',
          },
          status: { type: 'string', enum: ['True', 'False', 'Unknown'] },
          observedGeneration: generation,
          lastTransitionTime: dateTime,
          reason: {
            type: 'string',
            minLength: 1,
            maxLength: 1024,
            pattern: '^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$',
          },
          message: { type: 'string', maxLength: 32768 },
        },
      },
    },
    nodes: {
      description: 'Per-node results, keyed by node name. Each node merge-patches only its own key.',
      type: 'object',
      maxProperties: 5000,
      additionalProperties: {
        type: 'object',
        required: ['observedGeneration', 'programmed', 'lastUpdateTime'],
        properties: {
          observedGeneration: generation,
          programmed: {
            description: 'Whether the rules for the selected Services are in the kernel.',
            type: 'boolean',
          },
          servicesProgrammed: { type: 'integer', format: 'int32', minimum: 0 },
          message: { type: 'string', maxLength: 1024 },
          lastUpdateTime: dateTime,
        },
      },
    },
  },
};

/** The CustomResourceDefinition of ProxyPolicy. */
export function proxyPolicyCRD(): Node {
  const definitions = modelSchemas();
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: `${PLURAL}.${GROUP}` },
    spec: {
      group: GROUP,
      names: {
        kind: KIND,
        listKind: `${KIND}List`,
        plural: PLURAL,
        singular: KIND.toLowerCase(),
        shortNames: ['pp'],
      },
      scope: 'Namespaced',
      versions: [
        {
          name: VERSION,
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: [
            { name: 'Scheduler', type: 'string', jsonPath: '.spec.scheduler.type' },
            { name: 'Services', type: 'integer', jsonPath: '.status.servicesSelected' },
            {
              name: 'Programmed',
              type: 'string',
              jsonPath: '.status.conditions[?(@.type=="Programmed")].status',
            },
            { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' },
          ],
          schema: {
            openAPIV3Schema: {
              description: definitions[ProxyPolicyFields.name]!.description as string,
              type: 'object',
              required: ['spec'],
              // What the API server checks itself: not ours to state.
              properties: {
                apiVersion: { type: 'string' },
                kind: { type: 'string' },
                metadata: { type: 'object' },
                spec: structural({ $ref: `#/definitions/${SpecFields.name}` }, definitions, defaultsOf()),
                status: STATUS_SCHEMA,
              },
            },
          },
        },
      ],
    },
  };
}

const HEADER = `# Generated from src/api/model.ts by \`npm run crd\`: edit the model, not this file.
#
# ProxyPolicy: per-service proxy behaviour (scheduler, session affinity, masquerading, source
# ranges). The same decorators validate policies in nftproxy (src/api/validate.ts) and make
# this schema; test/api/crd.test.ts runs every fixture and sample through both and checks they
# agree, and that this file is what the model generates.
#
# Three defaults depend on another field, which OpenAPI cannot say, so nftproxy applies them
# when it reads a policy: defaultWeight 1 (with weighted), tableSize 251 (with maglev) and
# timeoutSeconds 10800 (with ClientIP).
`;

/** The CRD file's text. */
export function renderCRD(): string {
  return HEADER + stringify(proxyPolicyCRD(), { lineWidth: 0 });
}
