/**
 * Warning Events: what a user sees in `kubectl describe service` when this proxy cannot do
 * what a Service asks (its address is held by another Service, its health check node port
 * cannot be served), and in `kubectl describe proxypolicy` when a policy is invalid or loses
 * services to another (posted by policy-status-writer.ts).
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

/** The object an Event is about: a Service unless said otherwise. */
export interface EventSubject {
  namespace: string;
  name: string;
  /** Default `Service` (`v1`). */
  kind?: string;
  apiVersion?: string;
  /** Read from the API server for a Service when absent. */
  uid?: string;
  resourceVersion?: string;
  /**
   * Which version of the object the problem is about (a policy's generation): the same
   * problem at another revision is another Event.
   */
  revision?: number;
}

/** Posts Warning Events. */
export interface EventRecorder {
  /**
   * Queues a Warning Event on the object, posted once per object, reason and message (and
   * revision) in the cluster: a second call with the same is a no-op. Resolves when it is
   * posted, found posted or given up on; never rejects.
   */
  warn(on: EventSubject, reason: string, message: string): Promise<void>;
}

/** The wait before try `attempt + 1` of an API write: 100 ms doubling to 2 s, with jitter so that racing writers fall apart. */
export function retryDelayMs(attempt: number): number {
  return Math.min(100 * 2 ** attempt, 2000) * (0.5 + Math.random() / 2);
}

/** A failed API call worth another try: no answer, throttled, or a server error. */
export function retryable(e: unknown): boolean {
  const code = httpStatus(e);
  return code === undefined || code === 429 || code >= 500;
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
  /** Tries of one Event after a transient failure. Default 4. */
  maxRetries?: number;
  /** Waits between tries (tests make it instant). */
  sleep?: (ms: number) => Promise<void>;
}

/** Longest Event message (the API allows 1 KiB in events.k8s.io; core v1 more). */
const MAX_MESSAGE = 1024;
/** Event identities remembered as posted before the memory is cleared. */
const MAX_REMEMBERED = 10_000;

/** Posts Events through the API server: a Service's uid first (a GET) when not given, then the Event. */
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

  warn(on: EventSubject, reason: string, message: string): Promise<void> {
    const text = message.length > MAX_MESSAGE ? `${message.slice(0, MAX_MESSAGE - 1)}…` : message;
    const what = `${on.kind ?? 'Service'} ${on.namespace}/${on.name}`;
    const id = `${what}/${on.revision ?? ''}/${reason}/${text}`;
    if (this.seen.has(id)) return Promise.resolve();
    if (this.queued >= (this.opts.maxQueued ?? 100)) {
      this.log.warn('too many Events waiting; dropped one', { object: what, reason });
      return Promise.resolve();
    }
    if (this.seen.size >= MAX_REMEMBERED) this.seen.clear();
    this.seen.add(id);
    this.queued++;
    const posted = this.chain.then(async () => {
      try {
        await this.post(on, reason, text);
      } catch (e) {
        // Forgotten, so that the next occurrence tries again.
        this.seen.delete(id);
        this.log.warn('could not post Event', {
          object: what,
          reason,
          error: e instanceof Error ? e.message.split('\n')[0] : String(e),
        });
      } finally {
        this.queued--;
      }
    });
    this.chain = posted;
    return posted;
  }

  private async post(on: EventSubject, reason: string, message: string): Promise<void> {
    const { namespace, name } = on;
    let { uid, resourceVersion } = on;
    if (uid === undefined) {
      let svc;
      try {
        svc = await this.retrying(() => this.core.readNamespacedService({ namespace, name }));
      } catch (e) {
        if (httpStatus(e) === 404) return; // gone meanwhile: nothing to tell
        throw e;
      }
      uid = svc.metadata?.uid ?? '';
      resourceVersion = svc.metadata?.resourceVersion;
    }
    const hash = createHash('sha256')
      .update(`${uid}/${on.revision ?? ''}/${reason}/${message}`)
      .digest('hex')
      .slice(0, 16);
    const now = new Date(this.clock.now());
    const event: CoreV1Event = {
      metadata: { name: `${name.slice(0, 200)}.${hash}`, namespace },
      involvedObject: {
        apiVersion: on.apiVersion ?? 'v1',
        kind: on.kind ?? 'Service',
        namespace,
        name,
        uid,
        ...(resourceVersion ? { resourceVersion } : {}),
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
      await this.retrying(() => this.core.createNamespacedEvent({ namespace, body: event }));
    } catch (e) {
      if (httpStatus(e) === 409) return; // another node told it first
      throw e;
    }
  }

  /** `call`, tried again after transient failures (retryDelayMs apart). */
  private async retrying<T>(call: () => Promise<T>): Promise<T> {
    const sleep = this.opts.sleep ?? ((ms: number) => new Promise((resolve) => setTimeout(resolve, ms)));
    for (let attempt = 0; ; attempt++) {
      try {
        return await call();
      } catch (e) {
        if (attempt >= (this.opts.maxRetries ?? 4) || !retryable(e)) throw e;
        await sleep(retryDelayMs(attempt));
      }
    }
  }
}
