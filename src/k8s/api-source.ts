/**
 * The Kubernetes API as a source: list/watch informers (@kubernetes/client-node) on
 * Services, EndpointSlices, this node's Node and ProxyPolicies.
 *
 * client-node's ListWatch relists after a 410 and re-watches when a watch ends cleanly, but
 * stops for good on any other error, and cannot tell a silent watch from a quiet cluster.
 * Each informer is therefore wrapped: restarted with exponential backoff after an error,
 * and restarted when it has been silent for the watchdog period (a restart resumes from the
 * last resourceVersion; it relists only if that is too old). Objects already known are never
 * dropped because the API is unreachable: only a successful relist removes what is gone.
 *
 * ProxyPolicies are a custom resource whose CRD may not be installed. A 404 for them is an
 * answer, not an outage: the resource counts as listed and empty (so programming is not held
 * up, and policies seen before are dropped), and the list is retried every few minutes so
 * that installing the CRD later takes effect without a restart.
 */
import {
  CoreV1Api,
  CustomObjectsApi,
  DiscoveryV1Api,
  KubeConfig,
  type KubernetesObject,
  ListWatch,
  Watch,
} from '@kubernetes/client-node';
import { API_VERSION, GROUP, KIND, PLURAL, VERSION } from '../api/types.js';
import { silentLogger, type Logger } from '../telemetry/log.js';
import { parseResource } from './parse.js';
import type { ClusterSource, SourceSink } from './source.js';
import type { StoreKind } from './store.js';
import { Labels } from './types.js';

/** Options of the API source. */
export interface ApiSourceOptions {
  /** This node's name: only its Node object is watched. */
  nodeName: string;
  /** Kubeconfig file; default: in-cluster config when running in a pod, else ~/.kube/config. */
  kubeconfig?: string;
  /** A ready KubeConfig (tests). */
  kubeConfig?: KubeConfig;
  /** Restart delays after an error: first, and longest. Default 1 s and 30 s. */
  backoff?: { initialMs: number; maxMs: number };
  /** Restart a watch that delivered nothing for this long. Default 5 min. */
  watchdogMs?: number;
  /** Watch ProxyPolicies. Default true. */
  watchPolicies?: boolean;
  /** While the ProxyPolicy CRD is not installed, look for it again this often. Default 3 min. */
  missingCrdRetryMs?: number;
  log?: Logger;
}

interface Resource {
  kind: StoreKind;
  apiVersion: string;
  path: string;
  list: () => Promise<{ items: KubernetesObject[]; metadata?: { resourceVersion?: string } }>;
  labelSelector?: string;
  fieldSelector?: string;
  /**
   * The resource's API may not exist (a custom resource whose CRD is not installed): a 404
   * then means "no objects", logged once with this warning, instead of a failure.
   */
  ifNotInstalled?: string;
}

/** The HTTP status of a failed list (ApiException) or watch (Error with statusCode). */
function httpStatus(e: unknown): number | undefined {
  const { code, statusCode } = (e ?? {}) as { code?: unknown; statusCode?: unknown };
  return typeof code === 'number' ? code : typeof statusCode === 'number' ? statusCode : undefined;
}

/** Loads the kubeconfig the options ask for. */
export function loadKubeConfig(opts: Pick<ApiSourceOptions, 'kubeconfig' | 'kubeConfig'>): KubeConfig {
  if (opts.kubeConfig) return opts.kubeConfig;
  const kc = new KubeConfig();
  if (opts.kubeconfig) kc.loadFromFile(opts.kubeconfig);
  else if (process.env.KUBERNETES_SERVICE_HOST) kc.loadFromCluster();
  else kc.loadFromDefault();
  return kc;
}

/** One resource's informer, kept running. */
class ResilientInformer {
  private lw: ListWatch<KubernetesObject> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private watchdog: NodeJS.Timeout | undefined;
  private failures = 0;
  private lastActivity = Date.now();
  private stopped = false;
  private synced = false;
  /** The resource's API answered 404 (see Resource.ifNotInstalled); it counts as empty. */
  private notInstalled = false;
  private warnedNotInstalled = false;
  /** A start() of the ListWatch is under way. */
  private starting = false;
  /** The watchdog stopped the ListWatch itself; its abort error is expected. */
  private selfStopped = false;
  private onSynced: (() => void) | undefined;

  constructor(
    private readonly r: Resource,
    private readonly watch: Watch,
    private readonly sink: SourceSink,
    private readonly opts: ApiSourceOptions,
    private readonly log: Logger,
  ) {}

  /** Starts; resolves once the resource has been listed successfully. */
  start(): Promise<void> {
    this.lw = this.listWatch();
    const watchdogMs = this.opts.watchdogMs ?? 300_000;
    this.watchdog = setInterval(
      () => {
        // Never while a start is under way: ListWatch must not run two at once. Nothing to
        // watch while the resource's API is not installed.
        if (this.stopped || this.starting || this.notInstalled) return;
        if (Date.now() - this.lastActivity < watchdogMs) return;
        this.log.warn('watch silent too long; restarting it', {
          resource: this.r.kind,
          silentMs: Date.now() - this.lastActivity,
        });
        this.lastActivity = Date.now();
        this.selfStopped = true; // the aborted watch reports an error: not a failure
        void this.lw!.stop().then(() => this.restart(0));
      },
      Math.min(watchdogMs, 10_000),
    );
    this.watchdog.unref();
    return new Promise((resolve) => {
      this.onSynced = resolve;
      this.restart(0);
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.watchdog);
    this.onSynced?.();
    await this.lw?.stop();
  }

  private listWatch(): ListWatch<KubernetesObject> {
    const lw = new ListWatch<KubernetesObject>(
      this.r.path,
      this.watch,
      this.r.list,
      false,
      this.r.labelSelector,
      this.r.fieldSelector,
    );
    const activity = () => (this.lastActivity = Date.now());
    lw.on('add', (o) => (activity(), this.upsert(o)));
    lw.on('update', (o) => (activity(), this.upsert(o)));
    lw.on('delete', (o) => (activity(), this.remove(o)));
    lw.on('connect', activity);
    lw.on('error', (e) => this.failed(e));
    return lw;
  }

  private restart(delayMs: number): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.run(), delayMs);
  }

  private async run(): Promise<void> {
    if (this.stopped) return;
    if (this.starting) return this.restart(100); // come back once the running start is done
    this.starting = true;
    this.selfStopped = false;
    const failuresBefore = this.failures;
    const wasNotInstalled = this.notInstalled;
    // After a 404 a fresh ListWatch lists from scratch: the old one's resourceVersion and
    // objects belong to an API that went away.
    if (wasNotInstalled) this.lw = this.listWatch();
    this.notInstalled = false;
    try {
      await this.lw!.start();
    } finally {
      this.starting = false;
    }
    if (this.stopped) {
      await this.lw!.stop(); // stop() came while starting: close what start() opened
      return;
    }
    if (this.notInstalled) return; // still 404: failed() scheduled the next look
    if (wasNotInstalled && this.failures === failuresBefore) {
      this.warnedNotInstalled = false;
      this.log.info('API installed; watching it', { resource: this.r.kind });
    }
    // start() resolves after listing (when needed) and opening the watch; it reports
    // failures through the error event, which schedules the next attempt.
    if (this.failures === failuresBefore) {
      this.failures = 0;
      this.lastActivity = Date.now();
    }
    if (!this.synced && this.lw!.latestResourceVersion()) {
      this.synced = true;
      this.log.info('listed', { resource: this.r.kind, objects: this.lw!.list().length });
      this.onSynced?.();
    }
  }

  private failed(e: unknown): void {
    if (this.stopped || this.selfStopped) return;
    if (this.r.ifNotInstalled && httpStatus(e) === 404) return this.missing();
    this.failures++;
    const b = this.opts.backoff ?? { initialMs: 1000, maxMs: 30_000 };
    const delay = Math.min(b.initialMs * 2 ** (this.failures - 1), b.maxMs);
    this.log.warn('list/watch failed; retrying, keeping the objects known so far', {
      resource: this.r.kind,
      error: e instanceof Error ? e.message : String((e as { message?: unknown })?.message ?? e),
      retryInMs: delay,
    });
    this.restart(delay);
  }

  /**
   * The resource's API is not there: it has no objects (any seen before went with it), and
   * that counts as listed. Look again later, with a fresh ListWatch.
   */
  private missing(): void {
    for (const o of this.lw?.list() ?? []) this.remove(o);
    void this.lw?.stop();
    if (!this.warnedNotInstalled) this.log.warn(this.r.ifNotInstalled!, { resource: this.r.kind });
    this.warnedNotInstalled = true;
    this.notInstalled = true;
    this.failures = 0;
    this.restart(this.opts.missingCrdRetryMs ?? 180_000);
    if (this.synced) return;
    this.synced = true;
    this.onSynced?.();
  }

  private upsert(o: KubernetesObject): void {
    // Listed items come without kind and apiVersion; watch events carry them.
    const { parsed, diagnostics } = parseResource({ ...o, kind: this.r.kind, apiVersion: this.r.apiVersion });
    if (diagnostics.length) this.sink.diagnostics(diagnostics);
    if (parsed) this.sink.upsert(parsed);
    else this.remove(o); // an object we cannot use counts as absent
  }

  private remove(o: KubernetesObject): void {
    this.sink.remove(this.r.kind, o.metadata?.namespace ?? '', o.metadata?.name ?? '');
  }
}

/** Services, EndpointSlices, this Node and ProxyPolicies from the API server. */
export class ApiSource implements ClusterSource {
  private informers: ResilientInformer[] = [];
  private readonly log: Logger;

  constructor(private readonly opts: ApiSourceOptions) {
    this.log = opts.log ?? silentLogger;
  }

  async start(sink: SourceSink): Promise<void> {
    const kc = loadKubeConfig(this.opts);
    const core = kc.makeApiClient(CoreV1Api);
    const discovery = kc.makeApiClient(DiscoveryV1Api);
    const custom = kc.makeApiClient(CustomObjectsApi);
    const watch = new Watch(kc);
    const notOurs = `!${Labels.serviceProxyName}`;
    const resources: Resource[] = [
      {
        kind: 'Service',
        apiVersion: 'v1',
        path: '/api/v1/services',
        labelSelector: notOurs,
        list: () => core.listServiceForAllNamespaces({ labelSelector: notOurs }),
      },
      {
        kind: 'EndpointSlice',
        apiVersion: 'discovery.k8s.io/v1',
        path: '/apis/discovery.k8s.io/v1/endpointslices',
        labelSelector: `${notOurs},!${Labels.headless}`,
        list: () =>
          discovery.listEndpointSliceForAllNamespaces({ labelSelector: `${notOurs},!${Labels.headless}` }),
      },
      {
        kind: 'Node',
        apiVersion: 'v1',
        path: '/api/v1/nodes',
        fieldSelector: `metadata.name=${this.opts.nodeName}`,
        list: () => core.listNode({ fieldSelector: `metadata.name=${this.opts.nodeName}` }),
      },
    ];
    if (this.opts.watchPolicies ?? true)
      resources.push({
        kind: KIND,
        apiVersion: API_VERSION,
        path: `/apis/${GROUP}/${VERSION}/${PLURAL}`,
        list: () => custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural: PLURAL }),
        ifNotInstalled: 'ProxyPolicy CRD not installed; policies ignored',
      });
    this.informers = resources.map((r) => new ResilientInformer(r, watch, sink, this.opts, this.log));
    await Promise.all(this.informers.map((i) => i.start()));
  }

  async stop(): Promise<void> {
    await Promise.all(this.informers.map((i) => i.stop()));
  }
}
