/**
 * Warning Events about Services: what a user sees in `kubectl describe service` when this
 * proxy cannot do what the Service asks (its address is held by another Service, its health
 * check node port cannot be served).
 *
 * Every node sees the same problem at about the same time. So that a cluster of any size posts
 * one Event per problem rather than one per node, the Event's name is derived from what it
 * says (object, uid, reason, message): the first node to post creates it, the others get 409
 * AlreadyExists and stop there. Events are best effort: failures are logged, never thrown,
 * and never hold up a sync.
 */
import { createHash } from 'node:crypto';
import { CoreV1Api, type CoreV1Event, type KubeConfig } from '@kubernetes/client-node';
import { type Clock, systemClock } from './queue.js';
import { silentLogger, type Logger } from '../telemetry/log.js';
import { httpStatus } from '../k8s/reflector.js';

/** Source and reporting component of Events. */
export const EVENT_COMPONENT = 'nftproxy';

/** Event reasons nftproxy posts on Services. */
export const EventReason = {
  /** An address (IP or NodePort, protocol, port) of the Service is held by another Service. */
  addressConflict: 'AddressConflict',
  /** kube-proxy's reason: the health check node port could not be listened on. */
  healthCheckFailed: 'FailedToStartServiceHealthcheck',
} as const;
export type EventReason = (typeof EventReason)[keyof typeof EventReason];

/** The Service an Event is about. */
export interface ServiceRef {
  namespace: string;
  name: string;
}

/** Posts Warning Events about Services. */
export interface EventRecorder {
  /**
   * Queues a Warning Event on the Service, posted once per service, reason and message in
   * the cluster (a second call with the same is a no-op). Never throws.
   */
  warn(service: ServiceRef, reason: EventReason, message: string): void;
}

/** Options of the API recorder. */
export interface ApiEventRecorderOptions {
  kubeConfig: KubeConfig;
  /** This node: the Events' source host and reporting instance. */
  nodeName: string;
  log?: Logger;
  clock?: Pick<Clock, 'now'>;
  /** Events waiting to be posted at most; more are dropped, with a log line. Default 100. */
  maxQueued?: number;
}

/** Longest Event message (the API allows 1 KiB in events.k8s.io; core v1 more). */
const MAX_MESSAGE = 1024;
/** Event identities remembered as posted before the memory is cleared. */
const MAX_REMEMBERED = 10_000;

/** Posts Events through the API server: the Service's uid first (a GET), then the Event. */
export class ApiEventRecorder implements EventRecorder {
  private readonly core: CoreV1Api;
  private readonly log: Logger;
  private readonly clock: Pick<Clock, 'now'>;
  /** `namespace/name/reason/message` of Events posted or queued. */
  private readonly seen = new Set<string>();
  private queued = 0;
  private chain: Promise<void> = Promise.resolve();

  constructor(private readonly opts: ApiEventRecorderOptions) {
    this.core = opts.kubeConfig.makeApiClient(CoreV1Api);
    this.log = opts.log ?? silentLogger;
    this.clock = opts.clock ?? systemClock;
  }

  warn(service: ServiceRef, reason: EventReason, message: string): void {
    const text = message.length > MAX_MESSAGE ? `${message.slice(0, MAX_MESSAGE - 1)}…` : message;
    const id = `${service.namespace}/${service.name}/${reason}/${text}`;
    if (this.seen.has(id)) return;
    if (this.queued >= (this.opts.maxQueued ?? 100)) {
      this.log.warn('too many Events waiting; dropped one', {
        service: `${service.namespace}/${service.name}`,
        reason,
      });
      return;
    }
    if (this.seen.size >= MAX_REMEMBERED) this.seen.clear();
    this.seen.add(id);
    this.queued++;
    this.chain = this.chain.then(async () => {
      try {
        await this.post(service, reason, text);
      } catch (e) {
        // Forgotten, so that the next occurrence tries again.
        this.seen.delete(id);
        this.log.warn('could not post Service Event', {
          service: `${service.namespace}/${service.name}`,
          reason,
          error: e instanceof Error ? e.message.split('\n')[0] : String(e),
        });
      } finally {
        this.queued--;
      }
    });
  }

  private async post(service: ServiceRef, reason: EventReason, message: string): Promise<void> {
    const { namespace, name } = service;
    let svc;
    try {
      svc = await this.core.readNamespacedService({ namespace, name });
    } catch (e) {
      if (httpStatus(e) === 404) return; // gone meanwhile: nothing to tell
      throw e;
    }
    const uid = svc.metadata?.uid ?? '';
    const hash = createHash('sha256').update(`${uid}/${reason}/${message}`).digest('hex').slice(0, 16);
    const now = new Date(this.clock.now());
    const event: CoreV1Event = {
      metadata: { name: `${name.slice(0, 200)}.${hash}`, namespace },
      involvedObject: {
        apiVersion: 'v1',
        kind: 'Service',
        namespace,
        name,
        uid,
        ...(svc.metadata?.resourceVersion ? { resourceVersion: svc.metadata.resourceVersion } : {}),
      },
      type: 'Warning',
      reason,
      message,
      source: { component: EVENT_COMPONENT, host: this.opts.nodeName },
      reportingComponent: EVENT_COMPONENT,
      reportingInstance: this.opts.nodeName,
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
    };
    try {
      await this.core.createNamespacedEvent({ namespace, body: event });
    } catch (e) {
      if (httpStatus(e) === 409) return; // another node told it first
      throw e;
    }
  }
}
