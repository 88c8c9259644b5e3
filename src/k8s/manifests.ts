/**
 * The manifest source: a directory of Kubernetes YAML or JSON files, in any layout, read
 * into a cluster state. It is how nftproxy runs without an API server (demos, tests,
 * clusterless hosts).
 */
import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { LineCounter, parseAllDocuments } from 'yaml';
import { parseResource } from './parse.js';
import { type ClusterState, type Diagnostic, objectRef } from './types.js';

/** What a directory held. */
export interface LoadResult {
  state: ClusterState;
  diagnostics: Diagnostic[];
  /** Files read. */
  files: string[];
}

const MANIFEST = /\.(ya?ml|json)$/i;

/** Every manifest file under `dir`, sorted, skipping hidden files and directories. */
export async function listManifestFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    const entries = await readdir(d, { withFileTypes: true });
    for (const e of entries.sort((a, b) => a.name.localeCompare(b.name))) {
      if (e.name.startsWith('.')) continue;
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile() && MANIFEST.test(e.name)) out.push(p);
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

/**
 * Parses manifest texts into a cluster state. `texts` maps a name (for messages) to file
 * contents. Invalid objects are skipped with diagnostics; a second object with the same
 * kind, namespace and name is an error and the first one stays.
 */
export function parseManifests(texts: { name: string; text: string }[]): Omit<LoadResult, 'files'> {
  const state: ClusterState = { services: [], endpointSlices: [], nodes: [] };
  const diagnostics: Diagnostic[] = [];
  const seen = new Map<string, string>();
  for (const { name, text } of texts) {
    const lines = new LineCounter();
    const docs = parseAllDocuments(text, { lineCounter: lines, prettyErrors: false });
    const list = Array.isArray(docs) ? docs : [docs];
    for (const doc of list) {
      const line = lines.linePos(doc.range[0]).line;
      const origin = `${name}:${line}`;
      if (doc.errors.length) {
        const err = doc.errors[0]!;
        const at = lines.linePos(err.pos[0]);
        diagnostics.push({
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
        const { parsed, diagnostics: d } = parseResource(item, origin);
        diagnostics.push(...d);
        if (!parsed) continue;
        const ref = objectRef(parsed.kind, parsed.object.metadata);
        const first = seen.get(ref);
        if (first) {
          diagnostics.push({
            severity: 'error',
            object: ref,
            message: `defined twice; keeping the one in ${first}`,
            origin,
          });
          continue;
        }
        seen.set(ref, origin);
        if (parsed.kind === 'Service') state.services.push(parsed.object);
        else if (parsed.kind === 'EndpointSlice') state.endpointSlices.push(parsed.object);
        else state.nodes.push(parsed.object);
      }
    }
  }
  return { state, diagnostics };
}

/** Reads every manifest under `dir` into a cluster state. */
export async function loadManifestDir(dir: string): Promise<LoadResult> {
  const files = await listManifestFiles(dir);
  const texts = await Promise.all(
    files.map(async (f) => ({ name: relative(process.cwd(), f) || f, text: await readFile(f, 'utf8') })),
  );
  return { ...parseManifests(texts), files };
}
