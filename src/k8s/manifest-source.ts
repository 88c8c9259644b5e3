/**
 * The manifest directory as a live source: read at start, then watched. Only files that
 * changed are read again. A file that stops being valid YAML keeps its previous objects
 * (a typo while editing must not take services down); an object that fails validation is
 * treated as absent.
 */
import { type FSWatcher, watch } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { silentLogger, type Logger } from '../telemetry/log.js';
import type { Parsed } from './parse.js';
import { formatDiagnostic } from './types.js';
import {
  displayName,
  listManifestFiles,
  type ManifestFile,
  mergeManifestFiles,
  parseManifestText,
} from './manifests.js';
import type { ClusterSource, SourceSink } from './source.js';

/** Options of the manifest source. */
export interface ManifestSourceOptions {
  /** Also rescan this often, in case a file-system event was missed. Default 2 s. */
  pollIntervalMs?: number;
  /** Wait this long after a file-system event for more before reading. Default 50 ms. */
  debounceMs?: number;
  log?: Logger;
}

interface FileEntry {
  mtimeMs: number;
  size: number;
  file: ManifestFile;
}

/** Watches a directory of manifests. */
export class ManifestSource implements ClusterSource {
  private readonly files = new Map<string, FileEntry>();
  private current = new Map<string, Parsed>();
  private lastDiagnostics = '';
  private watcher: FSWatcher | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private debounceTimer: NodeJS.Timeout | undefined;
  private reloading: Promise<void> | undefined;
  private again = false;
  private sink: SourceSink | undefined;
  private readonly log: Logger;

  constructor(
    private readonly dir: string,
    private readonly opts: ManifestSourceOptions = {},
  ) {
    this.log = opts.log ?? silentLogger;
  }

  async start(sink: SourceSink): Promise<void> {
    const info = await stat(this.dir).catch(() => undefined);
    if (!info?.isDirectory())
      throw new Error(`manifest directory ${this.dir} does not exist or is not a directory`);
    this.sink = sink;
    // The first read must be complete: programming a partial view would remove services.
    // A failure here fails the start (and the process: its supervisor restarts it).
    await this.scan();
    if (!this.sink) return; // stopped meanwhile
    this.watcher = watch(this.dir, { recursive: true }, () => this.schedule());
    this.watcher.on('error', (e) =>
      this.log.warn('watching the manifest directory failed; polling only', { error: e }),
    );
    this.pollTimer = setInterval(() => this.schedule(), this.opts.pollIntervalMs ?? 2000);
    this.pollTimer.unref();
  }

  async stop(): Promise<void> {
    this.watcher?.close();
    clearInterval(this.pollTimer);
    clearTimeout(this.debounceTimer);
    this.sink = undefined;
    await this.reloading;
  }

  private schedule(): void {
    clearTimeout(this.debounceTimer);
    this.debounceTimer = setTimeout(() => void this.reload(), this.opts.debounceMs ?? 50);
  }

  /** Reads what changed and tells the sink; runs one at a time, and again if asked meanwhile. */
  private reload(): Promise<void> {
    if (this.reloading) {
      this.again = true;
      return this.reloading;
    }
    this.reloading = (async () => {
      try {
        do {
          this.again = false;
          await this.scan();
        } while (this.again);
      } catch (e) {
        this.log.error('reading the manifest directory failed; keeping what was read before', {
          dir: this.dir,
          error: e,
        });
      } finally {
        this.reloading = undefined;
      }
    })();
    return this.reloading;
  }

  private async scan(): Promise<void> {
    const paths = await listManifestFiles(this.dir);
    const seen = new Set(paths);
    for (const p of this.files.keys()) if (!seen.has(p)) this.files.delete(p);
    for (const p of paths) {
      const info = await stat(p).catch(() => undefined);
      if (!info) continue;
      const known = this.files.get(p);
      if (known && known.mtimeMs === info.mtimeMs && known.size === info.size) continue;
      const text = await readFile(p, 'utf8').catch((e: Error) => e);
      if (text instanceof Error) {
        // Replaced between listing and reading, say: keep what it held, read it next time.
        this.log.warn('reading a manifest file failed; keeping its last objects', { file: p, error: text });
        continue;
      }
      const file = parseManifestText(displayName(p), text);
      // Keep the last good objects of a file that does not parse as YAML.
      if (file.yamlError && known) file.objects = known.file.objects;
      this.files.set(p, { mtimeMs: info.mtimeMs, size: info.size, file });
    }
    const { objects, diagnostics } = mergeManifestFiles([...this.files.values()].map((e) => e.file));
    const text = diagnostics.map(formatDiagnostic).join('\n');
    if (text !== this.lastDiagnostics) {
      this.lastDiagnostics = text;
      if (diagnostics.length) this.sink?.diagnostics(diagnostics);
    }
    const sink = this.sink;
    if (!sink) return;
    for (const [ref, p] of objects) if (this.current.get(ref) !== p) sink.upsert(p);
    for (const [ref, p] of this.current) {
      if (!objects.has(ref)) sink.remove(p.kind, p.object.metadata.namespace, p.object.metadata.name);
    }
    this.current = objects;
  }
}
