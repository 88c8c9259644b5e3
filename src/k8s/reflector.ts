/**
 * One resource of the API server, listed and watched, passed on object by object and held
 * nowhere: a cache-less reflector. client-node's ListWatch keeps every raw object it has seen
 * (at 50,000 Services and EndpointSlices, hundreds of MB) and lists in one response; this
 * lists in pages, parses each object at once into the store's compact form and keeps only
 * the keys it has delivered, so that a relist can tell what went away.
 *
 * It runs until stopped: after an error it waits (exponential backoff with jitter) and
 * watches again from the last resourceVersion, relisting only when the API server says that
 * version is gone (410); a watch that stays silent longer than the watchdog period is
 * restarted. `retryNow` cuts a wait short (the API source calls it once the API server
 * answers again). Objects already known are never dropped because the API is unreachable:
 * only a completed relist removes what is gone.
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest, type RequestOptions } from 'node:https';
import { type KubeConfig, Watch } from '@kubernetes/client-node';
import { silentLogger, type Logger } from '../telemetry/log.js';
import { type Clock, sleepOn, systemClock } from '../clock.js';
import { parseResource } from './parse.js';
import type { SourceSink } from './source.js';
import type { StoreKind } from './store.js';

/** What one reflector lists and watches. */
export interface ResourceSpec {
  kind: StoreKind;
  apiVersion: string;
  /** Collection path: `/api/v1/services`. */
  path: string;
  labelSelector?: string;
  fieldSelector?: string;
  /**
   * The resource's API may not exist (a custom resource whose CRD is not installed): a 404
   * then means "no objects", logged once with this warning, instead of a failure.
   */
  ifNotInstalled?: string;
  /**
   * The resource is optional: a 403 (this identity may not list it, say RBAC from an older
   * release) counts as "no objects" too, logged once with this warning, and is looked for
   * again like a missing API. Without it a 403 is a failure, retried with backoff.
   */
  ifForbidden?: string;
}

/**
 * Where a reflector is: listing (first list, a relist after 410, or reconnecting), watching
 * (the API server answered the watch), waiting after a failure, or finding the resource's
 * API not installed.
 */
export type ReflectorPhase = 'listing' | 'watching' | 'backing-off' | 'not-installed';

/** What a reflector reports about itself (metrics, logs). */
export interface ReflectorStatus {
  /** The kind it lists and watches. */
  resource: StoreKind;
  phase: ReflectorPhase;
  /**
   * When it last heard from the API server: a list page, a watch answered, or a watch event
   * (epoch ms; 0: never).
   */
  lastEventAt: number;
  /** Failed lists and watches since start. */
  failures: number;
}

/** Timing of a reflector. */
export interface ReflectorOptions {
  /** Restart delays after an error: first, and longest (jitter of up to a fifth is added). */
  backoff?: { initialMs: number; maxMs: number };
  /** Restart a watch that delivered nothing for this long. Default 5 min. */
  watchdogMs?: number;
  /** While the resource's API is not installed, look for it again this often. Default 3 min. */
  missingRetryMs?: number;
  /** Objects per list page. Default 500, as client-go's pager. */
  pageSize?: number;
  log?: Logger;
  /** Random numbers in [0, 1), for the jitter (tests). */
  random?: () => number;
  /** Called on every change of phase. */
  onPhase?: (phase: ReflectorPhase) => void;
  /** Time, the backoff waits and the watchdog's checks (tests move it by hand). */
  clock?: Clock;
}

/** An HTTP error from the API server, with its status code. */
export class ApiError extends Error {
  override readonly name = 'ApiError';
  constructor(
    readonly statusCode: number,
    message: string,
  ) {
    super(message);
  }
}

/** The HTTP status of a failed list or watch (ApiError, or Error with statusCode). */
export function httpStatus(e: unknown): number | undefined {
  const { statusCode, code } = (e ?? {}) as { statusCode?: unknown; code?: unknown };
  return typeof statusCode === 'number' ? statusCode : typeof code === 'number' ? code : undefined;
}

interface ListPage {
  metadata?: { resourceVersion?: string; continue?: string };
  items?: Record<string, unknown>[];
}

/** An answer of the API server: status and body. */
interface Answer {
  status: number;
  statusMessage: string;
  text: string;
}

/** GETs `path` from the API server, with the kubeconfig's credentials. */
export async function apiGet(
  kc: KubeConfig,
  path: string,
  query: Record<string, string | undefined> = {},
  timeoutMs = 60_000,
): Promise<Answer> {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('no current cluster in the kubeconfig');
  const url = new URL(cluster.server + path);
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== '') url.searchParams.set(k, v);
  const opts: RequestOptions = { method: 'GET', headers: { accept: 'application/json' } };
  await kc.applyToHTTPSOptions(opts);
  const send = url.protocol === 'http:' ? httpRequest : httpsRequest;
  return new Promise((resolve, reject) => {
    const req = send(url, { ...opts, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          statusMessage: res.statusMessage ?? '',
          text: Buffer.concat(chunks).toString('utf8'),
        }),
      );
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url.pathname}: timed out`)));
    req.on('error', reject);
    req.end();
  });
}

/** GETs `path` from the API server as JSON; anything but 200 is an ApiError. */
async function getJSON(
  kc: KubeConfig,
  path: string,
  query: Record<string, string | undefined>,
): Promise<unknown> {
  const { status, statusMessage, text } = await apiGet(kc, path, query);
  if (status !== 200) {
    let message = `${status} ${statusMessage}`.trim();
    try {
      const body = JSON.parse(text) as { message?: string };
      if (body.message) message = `${message}: ${body.message}`;
    } catch {
      // not a Status object
    }
    throw new ApiError(status, `GET ${path}: ${message}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`GET ${path}: not JSON: ${(e as Error).message}`);
  }
}

const keyOf = (o: { metadata?: { namespace?: string; name?: string } }) =>
  `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;

/** Lists and watches one resource until stopped. */
export class Reflector {
  private readonly log: Logger;
  private stopped = false;
  private synced = false;
  private onSynced: (() => void) | undefined;
  /**
   * Keys of the objects delivered and not removed since, when the sink cannot tell
   * (`SourceSink.keys`): relists compare with them.
   */
  private known = new Set<string>();
  private resourceVersion = '';
  /** Failures in a row: the exponent of the backoff. */
  private failures = 0;
  private totalFailures = 0;
  private phase: ReflectorPhase = 'listing';
  private lastEventAt = 0;
  private notInstalled = false;
  private warnedNotInstalled = false;
  private readonly clock: Clock;
  private lastActivity: number;
  private watchAbort: AbortController | undefined;
  private wake: (() => void) | undefined;
  private loop: Promise<void> | undefined;
  private watchdog: unknown;

  constructor(
    private readonly kc: KubeConfig,
    private readonly spec: ResourceSpec,
    private readonly sink: SourceSink,
    private readonly opts: ReflectorOptions = {},
  ) {
    this.log = opts.log ?? silentLogger;
    this.clock = opts.clock ?? systemClock;
    this.lastActivity = this.clock.now();
  }

  /** Starts; resolves once the resource has been listed (or found not installed) once. */
  start(): Promise<void> {
    const synced = new Promise<void>((resolve) => (this.onSynced = resolve));
    const watchdogMs = this.opts.watchdogMs ?? 300_000;
    const check = () => {
      if (this.stopped) return;
      this.watchdog = this.clock.setTimeout(check, Math.min(watchdogMs, 10_000));
      (this.watchdog as { unref?: () => void }).unref?.();
      const now = this.clock.now();
      if (!this.watchAbort || now - this.lastActivity < watchdogMs) return;
      this.log.warn('watch silent too long; restarting it', {
        resource: this.spec.kind,
        silentMs: now - this.lastActivity,
      });
      this.lastActivity = now;
      this.watchAbort.abort();
    };
    this.watchdog = this.clock.setTimeout(check, Math.min(watchdogMs, 10_000));
    (this.watchdog as { unref?: () => void }).unref?.();
    this.loop = this.run();
    return synced;
  }

  /** Where it is, and when it last heard from the API server. */
  status(): ReflectorStatus {
    return {
      resource: this.spec.kind,
      phase: this.phase,
      lastEventAt: this.lastEventAt,
      failures: this.totalFailures,
    };
  }

  /**
   * Ends a wait after a failure now, and starts the backoff over: the API server is known
   * to answer again. Does nothing unless backing off.
   */
  retryNow(): void {
    if (this.phase !== 'backing-off') return;
    this.failures = 0;
    this.wake?.();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.clock.clearTimeout(this.watchdog);
    this.watchAbort?.abort();
    this.wake?.();
    this.onSynced?.();
    await this.loop;
  }

  private async run(): Promise<void> {
    let mustList = true;
    while (!this.stopped) {
      try {
        if (mustList) {
          this.setPhase('listing');
          await this.list();
          mustList = false;
          if (this.notInstalled) {
            this.notInstalled = false;
            this.warnedNotInstalled = false;
            this.log.info('API installed; watching it', { resource: this.spec.kind });
          }
        }
        // Synced once listed and watching (or once the watch failed: the list stands).
        await this.watch(() => {
          this.failures = 0;
          this.lastEventAt = this.clock.now();
          this.setPhase('watching');
          this.markSynced();
        });
      } catch (e) {
        if (!mustList) this.markSynced();
        if (this.stopped) break;
        const status = httpStatus(e);
        const absent =
          status === 404 ? this.spec.ifNotInstalled : status === 403 ? this.spec.ifForbidden : undefined;
        if (absent !== undefined) {
          this.missing(absent);
          this.setPhase('not-installed');
          mustList = true;
          await this.sleep(this.opts.missingRetryMs ?? 180_000);
          continue;
        }
        if (status === 410) {
          // The resourceVersion is gone (compacted): list again, at once.
          mustList = true;
          continue;
        }
        this.failures++;
        this.totalFailures++;
        const delay = this.backoff();
        this.setPhase('backing-off');
        this.log.warn('list/watch failed; retrying, keeping the objects known so far', {
          resource: this.spec.kind,
          error: e instanceof Error ? e.message : String(e),
          retryInMs: delay,
        });
        await this.sleep(delay);
      }
    }
  }

  /** The next delay: exponential from the first to the longest, plus up to a fifth of jitter. */
  private backoff(): number {
    const b = this.opts.backoff ?? { initialMs: 1000, maxMs: 30_000 };
    const base = Math.min(b.initialMs * 2 ** (this.failures - 1), b.maxMs);
    return Math.round(base * (1 + 0.2 * (this.opts.random ?? Math.random)()));
  }

  private setPhase(phase: ReflectorPhase): void {
    if (phase === this.phase) return;
    this.phase = phase;
    this.opts.onPhase?.(phase);
  }

  private sleep(ms: number): Promise<void> {
    const wait = sleepOn(this.clock, ms);
    this.wake = wait.wake;
    return wait.done;
  }

  private markSynced(): void {
    if (this.synced) return;
    this.synced = true;
    this.onSynced?.();
  }

  /** Lists every page; delivers each object; then removes what the list no longer has. */
  private async list(): Promise<void> {
    const seen = new Set<string>();
    let cont: string | undefined;
    let rv = '';
    do {
      const page = (await getJSON(this.kc, this.spec.path, {
        limit: String(this.opts.pageSize ?? 500),
        continue: cont,
        labelSelector: this.spec.labelSelector,
        fieldSelector: this.spec.fieldSelector,
      })) as ListPage;
      if (this.stopped) return;
      this.lastEventAt = this.clock.now();
      for (const o of page.items ?? []) {
        seen.add(keyOf(o as never));
        this.upsert(o);
      }
      cont = page.metadata?.continue || undefined;
      rv = page.metadata?.resourceVersion ?? rv;
    } while (cont);
    for (const k of this.heldKeys()) if (!seen.has(k)) this.remove(k);
    this.known = this.sink.keys ? new Set() : seen;
    this.resourceVersion = rv;
    this.lastActivity = this.clock.now();
    if (!this.synced) this.log.info('listed', { resource: this.spec.kind, objects: seen.size });
  }

  /**
   * Watches from the last resourceVersion until the watch ends (resolves) or fails (throws);
   * `connected` is called once the API server answered the watch request.
   */
  private watch(connected: () => void): Promise<void> {
    return new Promise((resolve, reject) => {
      let failed: unknown;
      const controller = new AbortController();
      this.watchAbort = controller;
      this.lastActivity = this.clock.now();
      let ended = false;
      const done = (err: unknown) => {
        ended = true;
        if (this.watchAbort === controller) this.watchAbort = undefined;
        // An abort (watchdog, stop) ends the watch like a clean close: watch again.
        const aborted = controller.signal.aborted || (err as { name?: string } | null)?.name === 'AbortError';
        if (failed !== undefined) reject(failed);
        else if (err && !aborted) reject(err);
        else resolve();
      };
      new Watch(this.kc)
        .watch(
          this.spec.path,
          {
            resourceVersion: this.resourceVersion,
            allowWatchBookmarks: true,
            ...(this.spec.labelSelector ? { labelSelector: this.spec.labelSelector } : {}),
            ...(this.spec.fieldSelector ? { fieldSelector: this.spec.fieldSelector } : {}),
          },
          (type: string, obj: Record<string, unknown>) => {
            if (controller.signal.aborted) return;
            this.lastActivity = this.lastEventAt = this.clock.now();
            const meta = obj.metadata as { resourceVersion?: string } | undefined;
            if (type === 'ERROR') {
              const code = Number((obj as { code?: unknown }).code);
              failed = new ApiError(
                code || 500,
                `watch ${this.spec.path}: ${String((obj as { message?: unknown }).message ?? 'error')}`,
              );
              controller.abort();
              return;
            }
            if (meta?.resourceVersion) this.resourceVersion = meta.resourceVersion;
            if (type === 'ADDED' || type === 'MODIFIED') {
              if (!this.sink.keys) this.known.add(keyOf(obj as never));
              this.upsert(obj);
            } else if (type === 'DELETED') {
              this.remove(keyOf(obj as never));
            }
          },
          done,
        )
        .then((c) => {
          // Stopped or aborted while connecting: close what just opened.
          if (controller.signal.aborted || this.stopped) c.abort();
          else controller.signal.addEventListener('abort', () => c.abort(), { once: true });
          // client-node resolves after a failed request too, having called `done` first.
          if (!ended) connected();
        })
        .catch(done);
    });
  }

  /**
   * The resource's API is not there (or not for us): it has no objects (any seen before went
   * with it), and that counts as listed. Looked for again later.
   */
  private missing(why: string): void {
    for (const k of this.heldKeys()) this.remove(k);
    this.known = new Set();
    this.resourceVersion = '';
    if (!this.warnedNotInstalled) this.log.warn(why, { resource: this.spec.kind });
    this.warnedNotInstalled = true;
    this.notInstalled = true;
    this.failures = 0;
    this.markSynced();
  }

  /** The keys of what is held now (a copy: removing changes the sink's). */
  private heldKeys(): string[] {
    return [...(this.sink.keys ? this.sink.keys(this.spec.kind) : this.known)];
  }

  private upsert(o: Record<string, unknown>): void {
    // Listed items come without kind and apiVersion; watch events carry them.
    const { parsed, diagnostics } = parseResource({
      ...o,
      kind: this.spec.kind,
      apiVersion: this.spec.apiVersion,
    });
    if (diagnostics.length) this.sink.diagnostics(diagnostics);
    if (parsed) this.sink.upsert(parsed);
    else this.remove(keyOf(o as never)); // an object we cannot use counts as absent
  }

  private remove(key: string): void {
    this.known.delete(key);
    const slash = key.indexOf('/');
    this.sink.remove(this.spec.kind, key.slice(0, slash), key.slice(slash + 1));
  }
}
