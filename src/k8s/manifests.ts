/**
 * The manifest source's parsing: a directory of Kubernetes YAML or JSON files, in any
 * layout, read into a cluster state. It is how nftproxy runs without an API server (demos,
 * tests, clusterless hosts).
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { LineCounter, parseAllDocuments } from 'yaml';
import { type Parsed, parseResource } from './parse.js';
import { type ClusterState, type Diagnostic, objectRef } from './types.js';

/** What a directory held. */
export interface LoadResult {
  state: ClusterState;
  diagnostics: Diagnostic[];
  /** Files read. */
  files: string[];
}

/** One file's objects. */
export interface ManifestFile {
  name: string;
  objects: { parsed: Parsed; origin: string }[];
  diagnostics: Diagnostic[];
  /** Some document was not valid YAML. */
  yamlError: boolean;
}

const MANIFEST = /\.(ya?ml|json)$/i;

/** Every manifest file under `dir`, sorted, skipping hidden files and directories. */
export async function listManifestFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    const entries = await readdir(d, { withFileTypes: true });
    for (const e of entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
      if (e.name.startsWith('.')) continue;
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile() && MANIFEST.test(e.name)) out.push(p);
      // A ConfigMap volume holds symlinks to files in a hidden directory: follow them to files.
      else if (
        e.isSymbolicLink() &&
        MANIFEST.test(e.name) &&
        (await stat(p).catch(() => undefined))?.isFile()
      )
        out.push(p);
    }
  };
  await walk(dir);
  return out;
}

/** Flattens `kind: List` (and `ServiceList`, ...) documents into their items. */
function* items(doc: unknown): Generator<unknown> {
  const o = doc as { kind?: unknown; items?: unknown };
  if (o && typeof o.kind === 'string' && o.kind.endsWith('List') && Array.isArray(o.items)) {
    for (const item of o.items) yield* items(item);
  } else {
    yield doc;
  }
}

/** Parses one file's text. Invalid objects are left out, with diagnostics. */
export function parseManifestText(name: string, text: string): ManifestFile {
  const file: ManifestFile = { name, objects: [], diagnostics: [], yamlError: false };
  const lines = new LineCounter();
  for (const doc of parseAllDocuments(text, { lineCounter: lines, prettyErrors: false })) {
    const origin = `${name}:${lines.linePos(doc.range[0]).line}`;
    if (doc.errors.length) {
      const err = doc.errors[0]!;
      const at = lines.linePos(err.pos[0]);
      file.yamlError = true;
      file.diagnostics.push({
        severity: 'error',
        object: 'document',
        message: `unparseable YAML: ${err.message.split('\n')[0]}`,
        origin: `${name}:${at.line}:${at.col}`,
      });
      continue;
    }
    const value: unknown = doc.toJS();
    if (value === null || value === undefined) continue; // an empty document
    for (const item of items(value)) {
      const { parsed, diagnostics } = parseResource(item, origin);
      file.diagnostics.push(...diagnostics);
      if (parsed) file.objects.push({ parsed, origin });
    }
  }
  return file;
}

/** `Service default/web`: the identity of an object across files. */
export function parsedRef(p: Parsed): string {
  return objectRef(p.kind, p.object.metadata);
}

/**
 * Merges files (in the order given) into one set of objects. A second object with the same
 * kind, namespace and name is an error, and the first one stays.
 */
export function mergeManifestFiles(files: ManifestFile[]): {
  objects: Map<string, Parsed>;
  diagnostics: Diagnostic[];
} {
  const objects = new Map<string, Parsed>();
  const origins = new Map<string, string>();
  const diagnostics: Diagnostic[] = [];
  for (const f of files) {
    diagnostics.push(...f.diagnostics);
    for (const { parsed, origin } of f.objects) {
      const ref = parsedRef(parsed);
      const first = origins.get(ref);
      if (first) {
        diagnostics.push({
          severity: 'error',
          object: ref,
          message: `defined twice; keeping the one in ${first}`,
          origin,
        });
        continue;
      }
      origins.set(ref, origin);
      objects.set(ref, parsed);
    }
  }
  return { objects, diagnostics };
}

/** The cluster state of a set of objects. */
export function stateOf(objects: Iterable<Parsed>): ClusterState {
  const state: ClusterState = {
    services: [],
    endpointSlices: [],
    nodes: [],
    serviceCIDRs: [],
    policies: [],
  };
  for (const p of objects) {
    if (p.kind === 'Service') state.services.push(p.object);
    else if (p.kind === 'EndpointSlice') state.endpointSlices.push(p.object);
    else if (p.kind === 'ProxyPolicy') state.policies!.push(p.object);
    else if (p.kind === 'ServiceCIDR') state.serviceCIDRs!.push(p.object);
    else state.nodes.push(p.object);
  }
  return state;
}

/** Parses manifest texts into a cluster state. `name` is for messages. */
export function parseManifests(texts: { name: string; text: string }[]): Omit<LoadResult, 'files'> {
  const { objects, diagnostics } = mergeManifestFiles(texts.map((t) => parseManifestText(t.name, t.text)));
  return { state: stateOf(objects.values()), diagnostics };
}

/** A file's name in messages: relative to the working directory when that is shorter. */
export function displayName(path: string): string {
  return relative(process.cwd(), path) || path;
}

/** Reads every manifest under `dir` into a cluster state. */
export async function loadManifestDir(dir: string): Promise<LoadResult> {
  const files = await listManifestFiles(dir);
  const texts = await Promise.all(
    files.map(async (f) => ({ name: displayName(f), text: await readFile(f, 'utf8') })),
  );
  return { ...parseManifests(texts), files };
}
