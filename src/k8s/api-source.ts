/**
 * The Kubernetes API as a source: Services, EndpointSlices, this node's Node and
 * ProxyPolicies, each listed in pages and watched by a cache-less reflector (reflector.ts),
 * the objects parsed straight into the store.
 *
 * ProxyPolicies are a custom resource whose CRD may not be installed. A 404 for them is an
 * answer, not an outage: the resource counts as listed and empty (so programming is not held
 * up, and policies seen before are dropped), and the list is retried every few minutes so
 * that installing the CRD later takes effect without a restart.
 */
import { KubeConfig } from '@kubernetes/client-node';
import { API_VERSION, GROUP, KIND, PLURAL, VERSION } from '../api/types.js';
import { silentLogger, type Logger } from '../telemetry/log.js';
import { Reflector, type ResourceSpec } from './reflector.js';
import type { ClusterSource, SourceSink } from './source.js';
import { Labels } from './types.js';

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
  /** Restart a watch that delivered nothing for this long. Default 5 min. */
  watchdogMs?: number;
  /** Watch ProxyPolicies. Default true. */
  watchPolicies?: boolean;
  /** While the ProxyPolicy CRD is not installed, look for it again this often. Default 3 min. */
  missingCrdRetryMs?: number;
  /** Objects per list page. Default 500. */
  pageSize?: number;
  log?: Logger;
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

/** Services, EndpointSlices, this Node and ProxyPolicies from the API server. */
export class ApiSource implements ClusterSource {
  private reflectors: Reflector[] = [];
  private readonly log: Logger;

  constructor(private readonly opts: ApiSourceOptions) {
    this.log = opts.log ?? silentLogger;
  }

  async start(sink: SourceSink): Promise<void> {
    const kc = loadKubeConfig(this.opts);
    const notOurs = `!${Labels.serviceProxyName}`;
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
          ...(this.opts.watchdogMs !== undefined ? { watchdogMs: this.opts.watchdogMs } : {}),
          ...(this.opts.missingCrdRetryMs !== undefined
            ? { missingRetryMs: this.opts.missingCrdRetryMs }
            : {}),
          ...(this.opts.pageSize !== undefined ? { pageSize: this.opts.pageSize } : {}),
          log: this.log,
        }),
    );
    await Promise.all(this.reflectors.map((r) => r.start()));
  }

  async stop(): Promise<void> {
    await Promise.all(this.reflectors.map((r) => r.stop()));
  }
}
