/**
 * The Kubernetes API as a source: Services, EndpointSlices, this node's Node, ServiceCIDRs and
 * ProxyPolicies, each listed in pages and watched by a cache-less reflector (reflector.ts),
 * the objects parsed straight into the store.
 *
 * ProxyPolicies are a custom resource whose CRD may not be installed. A 404 for them is an
 * answer, not an outage: the resource counts as listed and empty (so programming is not held
 * up, and policies seen before are dropped), and the list is retried every few minutes so
 * that installing the CRD later takes effect without a restart.
 *
 * After a failure each reflector waits (backoff up to a cap). While any waits, the source asks
 * the API server's /readyz every second: as soon as it answers after not answering, every
 * waiting reflector reconnects at once, so a change made after an outage of any length is
 * seen within about a second of the API server's return, not after the rest of a 30 s wait.
 */
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { API_VERSION, GROUP, KIND, PLURAL, VERSION } from '../api/types.js';
import { silentLogger, type Logger } from '../telemetry/log.js';
import {
  apiGet,
  Reflector,
  type ReflectorPhase,
  type ReflectorStatus,
  type ResourceSpec,
} from './reflector.js';
import { type ClusterSource, NoKubeconfigError, type SourceSink } from './source.js';
import { Labels } from './types.js';
import { type Clock, sleepOn, systemClock } from '../clock.js';

/** Options of the API source. */
export interface ApiSourceOptions {
  /** This node's name: only its Node object is watched. */
  nodeName: string;
  /** Kubeconfig file; default: in-cluster config when running in a pod, else ~/.kube/config. */
  kubeconfig?: string;
  /** A ready KubeConfig (tests). */
  kubeConfig?: KubeConfig;
  /** Restart delays after an error: first, and longest (plus jitter). Default 1 s and 30 s. */
  backoff?: { initialMs: number; maxMs: number };
  /**
   * While a watch waits after a failure, ask the API server whether it answers this often,
   * and reconnect every waiting watch once it does. Default 1 s; 0: never ask.
   */
  probeIntervalMs?: number;
  /** Restart a watch that delivered nothing for this long. Default 5 min. */
  watchdogMs?: number;
  /** The service-proxy-name this proxy answers to (see ProxyConfig.serviceProxyName). */
  serviceProxyName?: string;
  /** Watch ProxyPolicies. Default true. */
  watchPolicies?: boolean;
  /** While the ProxyPolicy CRD is not installed, look for it again this often. Default 3 min. */
  missingCrdRetryMs?: number;
  /** Objects per list page. Default 500. */
  pageSize?: number;
  log?: Logger;
  /** Time, backoff waits, probes and the watchdog (tests move it by hand). */
  clock?: Clock;
}

export { NoKubeconfigError };

/**
 * Loads the kubeconfig the options ask for: the file given, else the in-cluster config in a
 * pod, else $KUBECONFIG or ~/.kube/config. When none of them exists it throws, naming each
 * (client-node would fall back to http://localhost:8080 and retry forever).
 */
export function loadKubeConfig(
  opts: Pick<ApiSourceOptions, 'kubeconfig' | 'kubeConfig'>,
  env: NodeJS.ProcessEnv = process.env,
): KubeConfig {
  if (opts.kubeConfig) return opts.kubeConfig;
  const kc = new KubeConfig();
  if (opts.kubeconfig) {
    if (!existsSync(opts.kubeconfig))
      throw new NoKubeconfigError(`--kubeconfig ${opts.kubeconfig}: no such file`);
    kc.loadFromFile(opts.kubeconfig);
  } else if (env.KUBERNETES_SERVICE_HOST) kc.loadFromCluster();
  else {
    const files = env.KUBECONFIG ? env.KUBECONFIG.split(delimiter).filter(Boolean) : [];
    const home = join(env.HOME ?? homedir(), '.kube', 'config');
    if (!files.some((f) => existsSync(f)) && !(files.length === 0 && existsSync(home)))
      throw new NoKubeconfigError(
        'no API server to talk to; tried: --kubeconfig (not given), the in-cluster config ' +
          '(KUBERNETES_SERVICE_HOST not set: not in a pod), ' +
          (files.length
            ? `$KUBECONFIG (${files.join(', ')}: none exists)`
            : `$KUBECONFIG (not set), ${home} (absent)`) +
          '. Give --kubeconfig FILE, or --manifests DIR to read the cluster from files',
      );
    kc.loadFromDefault();
  }
  return kc;
}

/** How long a probe of /readyz may take. */
const PROBE_TIMEOUT_MS = 2000;

/** Services, EndpointSlices, this Node, ServiceCIDRs and ProxyPolicies from the API server. */
export class ApiSource implements ClusterSource {
  private reflectors: Reflector[] = [];
  private readonly log: Logger;
  private readonly clock: Clock;
  private kc: KubeConfig | undefined;
  private stopped = false;
  /** Since when some watch waits after a failure (epoch ms); undefined while none does. */
  private outageSince: number | undefined;
  private probing: Promise<void> | undefined;
  private wakeProbe: (() => void) | undefined;

  constructor(private readonly opts: ApiSourceOptions) {
    this.log = opts.log ?? silentLogger;
    this.clock = opts.clock ?? systemClock;
  }

  async start(sink: SourceSink): Promise<void> {
    const kc = (this.kc = loadKubeConfig(this.opts));
    // Only the services this proxy programs (and their slices, which carry the label too).
    const notOurs = this.opts.serviceProxyName
      ? `${Labels.serviceProxyName}=${this.opts.serviceProxyName}`
      : `!${Labels.serviceProxyName}`;
    const resources: ResourceSpec[] = [
      { kind: 'Service', apiVersion: 'v1', path: '/api/v1/services', labelSelector: notOurs },
      {
        kind: 'EndpointSlice',
        apiVersion: 'discovery.k8s.io/v1',
        path: '/apis/discovery.k8s.io/v1/endpointslices',
        labelSelector: `${notOurs},!${Labels.headless}`,
      },
      {
        kind: 'Node',
        apiVersion: 'v1',
        path: '/api/v1/nodes',
        fieldSelector: `metadata.name=${this.opts.nodeName}`,
      },
    ];
    resources.push({
      kind: 'ServiceCIDR',
      apiVersion: 'networking.k8s.io/v1',
      path: '/apis/networking.k8s.io/v1/servicecidrs',
      ifNotInstalled:
        'ServiceCIDR API not served (Kubernetes before 1.33); service CIDRs come from settings only',
      ifForbidden:
        'not allowed to list servicecidrs (RBAC of an older nftproxy?); service CIDRs come from settings only',
    });
    if (this.opts.watchPolicies ?? true)
      resources.push({
        kind: KIND,
        apiVersion: API_VERSION,
        path: `/apis/${GROUP}/${VERSION}/${PLURAL}`,
        ifNotInstalled: 'ProxyPolicy CRD not installed; policies ignored',
      });
    this.reflectors = resources.map(
      (r) =>
        new Reflector(kc, r, sink, {
          ...(this.opts.backoff ? { backoff: this.opts.backoff } : {}),
          clock: this.clock,
          ...(this.opts.watchdogMs !== undefined ? { watchdogMs: this.opts.watchdogMs } : {}),
          ...(this.opts.missingCrdRetryMs !== undefined
            ? { missingRetryMs: this.opts.missingCrdRetryMs }
            : {}),
          ...(this.opts.pageSize !== undefined ? { pageSize: this.opts.pageSize } : {}),
          log: this.log,
          onPhase: (phase) => this.phaseChanged(phase),
        }),
    );
    await Promise.all(this.reflectors.map((r) => r.start()));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.wakeProbe?.();
    await Promise.all(this.reflectors.map((r) => r.stop()));
    await this.probing;
  }

  /** Each watched resource: connected or not, and when the API server last sent something. */
  watches(): ReflectorStatus[] {
    return this.reflectors.map((r) => r.status());
  }

  private waiting(): Reflector[] {
    return this.reflectors.filter((r) => r.status().phase === 'backing-off');
  }

  /** A reflector moved: start probing when one waits, say so when none waits any more. */
  private phaseChanged(phase: ReflectorPhase): void {
    if (this.stopped) return;
    if (phase === 'backing-off') {
      this.outageSince ??= this.clock.now();
      if ((this.opts.probeIntervalMs ?? 1000) > 0) this.probing ??= this.probe();
      return;
    }
    if (this.outageSince === undefined) return;
    if (this.reflectors.some((r) => ['backing-off', 'listing'].includes(r.status().phase))) return;
    this.log.info('watches resumed', {
      afterMs: this.clock.now() - this.outageSince,
      resources: this.reflectors.map((r) => r.status().resource),
    });
    this.outageSince = undefined;
  }

  /**
   * Asks /readyz while any reflector waits. Once the API server answers after it did not,
   * every waiting reflector retries at once. An answer it had all along changes nothing:
   * those failures were not the server's absence, and keep their backoff.
   */
  private async probe(): Promise<void> {
    const interval = this.opts.probeIntervalMs ?? 1000;
    let absent = false;
    try {
      while (!this.stopped && this.waiting().length) {
        const wait = sleepOn(this.clock, interval);
        this.wakeProbe = wait.wake;
        await wait.done;
        if (this.stopped) break;
        const answer = await this.answers();
        if (!answer.ok) {
          if (!absent)
            this.log.warn('API server does not answer; watching for its return', { error: answer.error });
          absent = true;
          continue;
        }
        if (!absent) continue;
        absent = false;
        const waiting = this.waiting();
        this.log.info('API server answers again; reconnecting watches', {
          resources: waiting.map((r) => r.status().resource),
        });
        for (const r of waiting) r.retryNow();
      }
    } finally {
      this.probing = undefined;
      this.wakeProbe = undefined;
    }
  }

  /**
   * Whether the API server answers: any HTTP answer to /readyz but 5xx or 429 (a server
   * that refuses us the path still answers; one that is starting says 500).
   */
  private async answers(): Promise<{ ok: true } | { ok: false; error: string }> {
    try {
      const { status, text } = await apiGet(this.kc!, '/readyz', {}, PROBE_TIMEOUT_MS);
      if (status >= 500 || status === 429)
        return { ok: false, error: `/readyz: ${status} ${text.slice(0, 200)}` };
      return { ok: true };
    } catch (e) {
      return { ok: false, error: e instanceof Error ? e.message : String(e) };
    }
  }
}
