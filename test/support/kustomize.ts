/**
 * `kustomize build` for this repository's manifests, in the test process, without the
 * kustomize binary. Only what config/ uses is implemented, as kustomize does it:
 *
 * - resources: files, and directories holding a kustomization.yaml (built recursively);
 * - namespace: sets metadata.namespace of namespaced objects, and renames Namespace objects;
 * - configMapGenerator: `files` (`key=path` or `path`), with disableNameSuffixHash: true;
 * - images: newName and newTag;
 * - patches: inline JSON 6902 patches (add, replace, remove) with a target kind and name.
 *
 * Anything else (another field, a generator option, a remote resource, an unknown kind whose
 * scope is not known here) throws, so a manifest that starts using more fails loudly instead
 * of being built wrongly. Output order: resources in order, then generated objects (kustomize
 * sorts by kind; nothing here depends on the order).
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, isAbsolute, join, relative, resolve } from 'node:path';
import { parse, parseAllDocuments } from 'yaml';

/** A Kubernetes object as built. */
export interface KObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [field: string]: unknown;
}

/** An object's identity in a build: `Kind/namespace/name`. */
export const objectKey = (o: KObject): string => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;

export class KustomizeError extends Error {}

const FIELDS = new Set([
  'apiVersion',
  'kind',
  'namespace',
  'resources',
  'configMapGenerator',
  'images',
  'patches',
]);
const GENERATOR_FIELDS = new Set(['name', 'files', 'options']);
const IMAGE_FIELDS = new Set(['name', 'newName', 'newTag']);

/** Kinds whose scope is known; any other kind throws. */
const CLUSTER_SCOPED = new Set([
  'Namespace',
  'CustomResourceDefinition',
  'ClusterRole',
  'ClusterRoleBinding',
  'PriorityClass',
]);
const NAMESPACED = new Set([
  'ServiceAccount',
  'ConfigMap',
  'Secret',
  'Service',
  'DaemonSet',
  'Deployment',
  'Role',
  'RoleBinding',
  'ProxyPolicy',
]);

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

function fail(where: string, message: string): never {
  throw new KustomizeError(`${where}: ${message}`);
}

function kustomizationFile(dir: string): string {
  const file = join(dir, 'kustomization.yaml');
  if (!existsSync(file))
    fail(dir, 'no kustomization.yaml (kustomization.yml and Kustomization are not read)');
  return file;
}

/** A path in a kustomization must stay below the kustomization's directory (files only). */
function insideRoot(root: string, path: string, where: string): string {
  const full = resolve(root, path);
  const rel = relative(root, full);
  if (rel.startsWith('..') || isAbsolute(rel)) fail(where, `${path} is outside ${root}`);
  return full;
}

function readObjects(file: string): KObject[] {
  const docs = parseAllDocuments(readFileSync(file, 'utf8'));
  const out: KObject[] = [];
  for (const d of docs) {
    if (d.errors.length) fail(file, d.errors[0]!.message);
    const o: unknown = d.toJS();
    if (o === null || o === undefined) continue;
    if (!isRecord(o) || typeof o.kind !== 'string' || typeof o.apiVersion !== 'string')
      fail(file, 'a document without apiVersion and kind');
    if (o.kind === 'List') fail(file, 'List objects are not implemented');
    if (!isRecord(o.metadata) || typeof o.metadata.name !== 'string') fail(file, 'no metadata.name');
    out.push(o as KObject);
  }
  return out;
}

function setNamespace(o: KObject, ns: string, where: string): void {
  if (CLUSTER_SCOPED.has(o.kind)) {
    // kustomize's default field specs: a Namespace object takes the namespace's name.
    if (o.kind === 'Namespace' && o.apiVersion === 'v1') o.metadata.name = ns;
    if (o.kind === 'ClusterRoleBinding') checkSubjects(o, where);
    if (o.kind === 'CustomResourceDefinition' && isRecord(o.spec) && isRecord(o.spec.conversion))
      if (o.spec.conversion.webhook !== undefined) fail(where, 'CRD conversion webhooks are not implemented');
    return;
  }
  if (!NAMESPACED.has(o.kind)) fail(where, `the scope of kind ${o.kind} is not known here`);
  o.metadata.namespace = ns;
  if (o.kind === 'RoleBinding') checkSubjects(o, where);
}

/**
 * kustomize rewrites the namespace of subjects named "default" (or, in newer versions, of
 * those in the default namespace or none): not implemented, so such subjects throw.
 */
function checkSubjects(o: KObject, where: string): void {
  const subjects = Array.isArray(o.subjects) ? (o.subjects as unknown[]) : [];
  for (const s of subjects)
    if (!isRecord(s) || s.name === 'default' || s.namespace === undefined || s.namespace === 'default')
      fail(where, `${o.kind} ${o.metadata.name}: subjects named "default" or without a namespace`);
}

function generateConfigMap(dir: string, g: unknown, where: string): KObject {
  if (!isRecord(g)) fail(where, 'configMapGenerator entry is not a mapping');
  for (const k of Object.keys(g)) if (!GENERATOR_FIELDS.has(k)) fail(where, `configMapGenerator.${k}`);
  if (typeof g.name !== 'string') fail(where, 'configMapGenerator without a name');
  const options = g.options ?? {};
  if (!isRecord(options)) fail(where, 'configMapGenerator.options is not a mapping');
  for (const k of Object.keys(options))
    if (k !== 'disableNameSuffixHash') fail(where, `configMapGenerator.options.${k}`);
  if (options.disableNameSuffixHash !== true)
    fail(where, 'name suffix hashes (and the references they rename) are not implemented');
  const data: Record<string, string> = {};
  for (const entry of Array.isArray(g.files) ? (g.files as unknown[]) : []) {
    if (typeof entry !== 'string') fail(where, 'configMapGenerator.files entries must be strings');
    const eq = entry.indexOf('=');
    const path = eq < 0 ? entry : entry.slice(eq + 1);
    const key = eq < 0 ? basename(path) : entry.slice(0, eq);
    if (Object.hasOwn(data, key)) fail(where, `configMapGenerator ${g.name}: key ${key} twice`);
    data[key] = readFileSync(insideRoot(dir, path, where), 'utf8');
  }
  if (!Object.keys(data).length) fail(where, `configMapGenerator ${g.name}: no files`);
  return { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: g.name }, data };
}

/** `repo/name:tag` -> `repo/name`; `@digest` is not implemented. */
function imageName(image: string, where: string): { name: string; tag: string | undefined } {
  if (image.includes('@')) fail(where, `image digests are not implemented: ${image}`);
  const slash = image.lastIndexOf('/');
  const colon = image.lastIndexOf(':');
  return colon > slash
    ? { name: image.slice(0, colon), tag: image.slice(colon + 1) }
    : { name: image, tag: undefined };
}

function setImages(objects: KObject[], images: unknown[], where: string): void {
  for (const img of images) {
    if (!isRecord(img) || typeof img.name !== 'string') fail(where, 'images entry without a name');
    for (const k of Object.keys(img)) if (!IMAGE_FIELDS.has(k)) fail(where, `images.${k}`);
    for (const o of objects) {
      const pod = (o.spec as { template?: { spec?: Record<string, unknown> } } | undefined)?.template?.spec;
      if (!pod) continue;
      for (const list of ['containers', 'initContainers']) {
        for (const c of (pod[list] as { image?: string }[] | undefined) ?? []) {
          if (typeof c.image !== 'string') continue;
          const { name, tag } = imageName(c.image, where);
          if (name !== img.name) continue;
          const newTag = typeof img.newTag === 'string' ? img.newTag : tag;
          c.image = `${typeof img.newName === 'string' ? img.newName : name}${newTag ? `:${newTag}` : ''}`;
        }
      }
    }
  }
}

/** Applies one JSON 6902 operation (RFC 6902: add, replace, remove; `-` appends). */
function applyOp(o: KObject, op: unknown, where: string): void {
  if (!isRecord(op) || typeof op.op !== 'string' || typeof op.path !== 'string')
    fail(where, 'a patch op needs op and path');
  if (!['add', 'replace', 'remove'].includes(op.op)) fail(where, `patch op ${op.op} is not implemented`);
  const keys = op.path
    .split('/')
    .slice(1)
    .map((k) => k.replaceAll('~1', '/').replaceAll('~0', '~'));
  const last = keys.pop();
  if (last === undefined) fail(where, 'a patch of the whole object');
  let at: unknown = o;
  for (const k of keys) {
    at = Array.isArray(at) ? at[Number(k)] : isRecord(at) ? at[k] : undefined;
    if (at === undefined) fail(where, `${op.path}: ${k} does not exist`);
  }
  if (Array.isArray(at)) {
    const i = last === '-' ? at.length : Number(last);
    if (!Number.isInteger(i) || i < 0 || i > at.length || (op.op !== 'add' && i === at.length))
      fail(where, `${op.path}: no index ${last}`);
    if (op.op === 'add') at.splice(i, 0, op.value);
    else if (op.op === 'replace') at[i] = op.value;
    else at.splice(i, 1);
  } else if (isRecord(at)) {
    if (op.op !== 'add' && !Object.hasOwn(at, last)) fail(where, `${op.path} does not exist`);
    if (op.op === 'remove') delete at[last];
    else at[last] = op.value;
  } else fail(where, `${op.path}: not inside an object or list`);
}

function applyPatches(objects: KObject[], patches: unknown[], where: string): void {
  for (const p of patches) {
    if (!isRecord(p) || typeof p.patch !== 'string' || !isRecord(p.target))
      fail(where, 'patches entries need an inline patch and a target (a path is not implemented)');
    for (const k of Object.keys(p.target))
      if (k !== 'kind' && k !== 'name') fail(where, `patches target.${k} is not implemented`);
    const ops: unknown = parse(p.patch);
    if (!Array.isArray(ops)) fail(where, 'only JSON 6902 patches (a list of ops) are implemented');
    const target = p.target as { kind?: unknown; name?: unknown };
    const targets = objects.filter(
      (o) => o.kind === target.kind && (target.name === undefined || o.metadata.name === target.name),
    );
    if (!targets.length) fail(where, `patch target ${JSON.stringify(p.target)} matches nothing`);
    for (const o of targets) for (const op of ops) applyOp(o, op, `${where} (${o.kind} ${o.metadata.name})`);
  }
}

/** Builds the kustomization in `dir` into its objects. */
export function kustomizeBuild(dir: string): KObject[] {
  const root = resolve(dir);
  const file = kustomizationFile(root);
  const k: unknown = parse(readFileSync(file, 'utf8'));
  if (!isRecord(k)) fail(file, 'not a mapping');
  for (const f of Object.keys(k)) if (!FIELDS.has(f)) fail(file, `field ${f} is not implemented`);
  if (k.apiVersion !== 'kustomize.config.k8s.io/v1beta1' || k.kind !== 'Kustomization')
    fail(file, 'want apiVersion kustomize.config.k8s.io/v1beta1, kind Kustomization');

  const objects: KObject[] = [];
  for (const r of (k.resources as unknown[] | undefined) ?? []) {
    if (typeof r !== 'string') fail(file, 'resources entries must be strings');
    if (/^[a-z]+:\/\/|^github\.com\//.test(r)) fail(file, `remote resources are not implemented: ${r}`);
    const path = resolve(root, r);
    if (!existsSync(path)) fail(file, `resource ${r} does not exist`);
    if (statSync(path).isDirectory()) objects.push(...kustomizeBuild(path));
    else objects.push(...readObjects(insideRoot(root, r, file)));
  }
  for (const g of (k.configMapGenerator as unknown[] | undefined) ?? [])
    objects.push(generateConfigMap(root, g, file));

  if (k.namespace !== undefined) {
    if (typeof k.namespace !== 'string') fail(file, 'namespace must be a string');
    for (const o of objects) setNamespace(o, k.namespace, `${file} (${o.kind} ${o.metadata.name})`);
  }
  if (k.images !== undefined) setImages(objects, k.images as unknown[], file);
  if (k.patches !== undefined) applyPatches(objects, k.patches as unknown[], file);

  const ids = new Set<string>();
  for (const o of objects) {
    const id = `${o.apiVersion.split('/').slice(0, -1).join('/')}/${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;
    if (ids.has(id)) fail(file, `${o.kind} ${o.metadata.name} twice`);
    ids.add(id);
  }
  return objects;
}
