/**
 * The metrics nftproxy exports (kube-proxy's names, help texts and buckets where they apply,
 * `nftproxy_` ones for the rest, and prom-client's process and Node.js metrics), and how the
 * operator's changes and syncs move them. The registry and the exposition are prom-client's;
 * what is here is the bookkeeping: which changes are still pending, the Local policy gaps
 * summed over services, what is read only when scraped.
 *
 * Time comes in as arguments (epoch ms), so tests need no clock. docs/metrics.md says what
 * each metric means.
 */
import {
  collectDefaultMetrics,
  Counter,
  exponentialBuckets,
  Gauge,
  Histogram,
  linearBuckets,
  Registry,
} from 'prom-client';
import type { SyncResult } from './syncer.js';

/** kube-proxy's sync duration buckets: 1 ms to about 16 s, doubling. */
const SYNC_BUCKETS = exponentialBuckets(0.001, 2, 15);

/**
 * kube-proxy's network programming buckets: 0 (its merge starts with a zero bucket), 0.25 s,
 * 0.5 s, every second to 59 s, every 5 s to 115 s, every 30 s to 5 min.
 */
const NETWORK_PROGRAMMING_BUCKETS = [
  0,
  ...linearBuckets(0.25, 0.25, 2),
  ...linearBuckets(1, 1, 59),
  ...linearBuckets(60, 5, 12),
  ...linearBuckets(120, 30, 7),
];

/** nft scripts sent: 256 B to 64 MiB, by fours. */
const TRANSACTION_BYTES_BUCKETS = exponentialBuckets(256, 4, 10);

/** Kinds of sync, the `type` label of `nftproxy_syncs_total`. */
export const SyncType = { full: 'full', partial: 'partial' } as const;
export type SyncType = (typeof SyncType)[keyof typeof SyncType];

/** Traffic policies of the no-local-endpoints gauge. */
export const TrafficPolicyLabel = { internal: 'internal', external: 'external' } as const;
export type TrafficPolicyLabel = (typeof TrafficPolicyLabel)[keyof typeof TrafficPolicyLabel];

/** Of one service: its ports with endpoints elsewhere but none here, per Local traffic policy. */
export interface LocalEndpointGaps {
  internal: number;
  external: number;
}

/** Figures about the programmed rules that cost O(services) to compute: taken when scraped. */
export interface ProgrammedFigures {
  /** Services with at least one programmed address. */
  services: number;
  /** Backend slots programmed. */
  endpoints: number;
}

/** New connections to one endpoint through one service address and port, as the kernel counted them. */
export interface EndpointCounterSample {
  /** `namespace/name`. */
  service: string;
  portName: string;
  /** The service address, or `*` for a NodePort. */
  address: string;
  protocol: string;
  port: number;
  /** `ip:port` (`[ip6]:port`). */
  endpoint: string;
  connections: number;
}

/** One watched resource, as the metrics show it. */
export interface WatchFigures {
  resource: string;
  /** Listed and watching (false: listing, waiting after a failure, or its API not installed). */
  connected: boolean;
  /** When the API server last sent something for it (epoch ms; 0: never). */
  lastEventAt: number;
  /** Failed lists and watches since start. */
  failures: number;
}

/** Options of ProxyMetrics. */
export interface ProxyMetricsOptions {
  /**
   * When the proxy started tracking changes (epoch ms). Trigger times before it belong to
   * the state found at start, not to a change this proxy programmed, and are not observed
   * (kube-proxy's trackerStartTime).
   */
  since: number;
  /** The programmed services and endpoints, read at each scrape; undefined keeps the last. */
  programmed?: () => ProgrammedFigures | undefined;
  /** The source's watches, read at each scrape (none for a manifest directory). */
  watches?: () => readonly WatchFigures[];
  /**
   * The connection counters of service endpoints, read from the kernel at each scrape
   * (undefined: not exported). At most `maxSeries` series are exported.
   */
  endpointCounters?: { read: () => Promise<EndpointCounterSample[] | undefined>; maxSeries: number };
  /** prom-client's process and Node.js metrics (RSS, CPU, heap, event loop lag, GC); default on. */
  processMetrics?: boolean;
}

/** What the operator knows when a sync succeeded, besides its result. */
export interface SyncContext {
  /** When it finished (epoch ms). */
  at: number;
  /** What `syncStarting` returned for this sync. */
  mark: number;
  /** Elements and chains now in the kernel. */
  programmedCounts?: { elements: number; chains: number };
  /**
   * Services with Local policy gaps among those the sync recompiled (all of them when full);
   * a recompiled service missing here has none.
   */
  localGaps: ReadonlyMap<string, LocalEndpointGaps>;
  /** Whether stale flows were actually cleared (a conntrack cleaner is configured). */
  conntrack: boolean;
  /** Service addresses not programmed because another service holds them. */
  conflicts?: number;
}

/** The metrics nftproxy exports, and how sync and change events update them. */
export class ProxyMetrics {
  /** Every metric below (and the process ones), for /metrics. */
  readonly registry = new Registry();

  // kube-proxy's, with its names, help texts and buckets (docs/metrics.md).

  /** Duration of every successful sync. */
  readonly syncDuration = this.histogram(
    'kubeproxy_sync_proxy_rules_duration_seconds',
    'SyncProxyRules latency in seconds: successful syncs, full and partial',
    SYNC_BUCKETS,
  );
  /** Duration of successful full syncs. */
  readonly fullSyncDuration = this.histogram(
    'kubeproxy_sync_full_proxy_rules_duration_seconds',
    'SyncProxyRules latency in seconds for full resyncs',
    SYNC_BUCKETS,
  );
  /** Duration of successful partial syncs. */
  readonly partialSyncDuration = this.histogram(
    'kubeproxy_sync_partial_proxy_rules_duration_seconds',
    'SyncProxyRules latency in seconds for partial resyncs',
    SYNC_BUCKETS,
  );
  /** From an endpoint change's trigger time to the end of the sync that programmed it. */
  readonly networkProgramming = this.histogram(
    'kubeproxy_network_programming_duration_seconds',
    "In Cluster Network Programming Latency in seconds: from an EndpointSlice's " +
      'last-change-trigger-time to the end of the sync that programmed it',
    NETWORK_PROGRAMMING_BUCKETS,
  );
  /** When the last successful sync ended (epoch seconds). */
  readonly lastSync = this.gauge(
    'kubeproxy_sync_proxy_rules_last_timestamp_seconds',
    'The last time proxy rules were successfully synced',
  );
  /** When a change was last queued (epoch seconds). */
  readonly lastQueued = this.gauge(
    'kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds',
    'The last time a sync of proxy rules was queued',
  );
  /** Endpoint changes not yet programmed. */
  readonly endpointChangesPending = this.gauge(
    'kubeproxy_sync_proxy_rules_endpoint_changes_pending',
    'Pending proxy rules Endpoint changes: EndpointSlice changes (one per service whose ' +
      'endpoints they change) that no successful sync has programmed yet',
  );
  /** EndpointSlice events seen. */
  readonly endpointChangesTotal = this.counter(
    'kubeproxy_sync_proxy_rules_endpoint_changes_total',
    'Cumulative proxy rules Endpoint changes: EndpointSlice adds, updates and deletes seen, effective or not',
  );
  /** Services with a Service change not yet programmed. */
  readonly serviceChangesPending = this.gauge(
    'kubeproxy_sync_proxy_rules_service_changes_pending',
    'Pending proxy rules Service changes: services whose Service object changed since a ' +
      'successful sync last programmed them',
  );
  /** Service events seen. */
  readonly serviceChangesTotal = this.counter(
    'kubeproxy_sync_proxy_rules_service_changes_total',
    'Cumulative proxy rules Service changes: Service adds, updates and deletes seen, effective or not',
  );
  /** Failed syncs. */
  readonly syncFailures = this.counter(
    'kubeproxy_sync_proxy_rules_nftables_sync_failures_total',
    'Cumulative proxy nftables sync failures',
  );
  /** Service ports with a Local policy, endpoints elsewhere and none here. */
  readonly noLocalEndpoints = this.gauge(
    'kubeproxy_sync_proxy_rules_no_local_endpoints_total',
    'Number of services with a Local traffic policy and no endpoints: service ports with ' +
      'usable endpoints elsewhere but none on this node',
    ['traffic_policy'],
  );

  // nftproxy's own.

  /** Services programmed (set when scraped). */
  readonly servicesProgrammed = this.gauge(
    'nftproxy_services_programmed',
    'Services with at least one address programmed (computed when scraped)',
  );
  /** Backend slots programmed (set when scraped). */
  readonly endpointsProgrammed = this.gauge(
    'nftproxy_endpoints_programmed',
    'Backends programmed: endpoints summed over the service addresses and ports forwarding to them (computed when scraped)',
  );
  /** Set and map elements in our tables. */
  readonly elementsProgrammed = this.gauge(
    'nftproxy_elements_programmed',
    "Set and map elements in nftproxy's tables after the last successful sync",
  );
  /** Chains in our tables. */
  readonly chainsProgrammed = this.gauge(
    'nftproxy_chains_programmed',
    "Chains in nftproxy's tables after the last successful sync",
  );
  /** Addresses lost to another service. */
  readonly addressConflicts = this.gauge(
    'nftproxy_address_conflicts',
    'Service addresses (IP or NodePort, protocol, port) not programmed because another Service ' +
      'holds them, after the last successful sync; each has a Warning Event AddressConflict',
  );
  /** Sizes of the nft scripts sent. */
  readonly transactionBytes = this.histogram(
    'nftproxy_transaction_bytes',
    'Size of the nft script of each successful sync that sent one',
    TRANSACTION_BYTES_BUCKETS,
  );
  /** Syncs by type and result. */
  readonly syncs = this.counter(
    'nftproxy_syncs_total',
    'Syncs run, by type (full, partial) and result (success, failure)',
    ['type', 'result'],
  );
  /** Conntrack flow filters run. */
  readonly staleFlowsCleared = this.counter(
    'nftproxy_stale_flows_cleared_total',
    'Stale conntrack flow filters run after syncs (UDP/SCTP flows to removed endpoints or newly served addresses)',
  );
  /** Each watched resource: 1 while watching. */
  readonly watchConnected = this.gauge(
    'nftproxy_watch_connected',
    'Whether the watch of each API resource is connected: 1 watching, 0 listing, backing off after a failure, or not installed (set when scraped)',
    ['resource'],
  );
  /** When each watched resource last heard from the API server. */
  readonly watchLastEvent = this.gauge(
    'nftproxy_watch_last_event_timestamp_seconds',
    'When the API server last answered a list or watch, or sent a watch event (bookmarks included), for each resource (set when scraped)',
    ['resource'],
  );
  /** Failed lists and watches per resource. */
  readonly watchFailures = this.counter(
    'nftproxy_watch_failures_total',
    'Failed lists and watches of each API resource, each retried after a backoff',
    ['resource'],
  );
  /** Per endpoint connection counters (opt-in, bounded). */
  readonly endpointConnections = this.counter(
    'nftproxy_endpoint_connections_total',
    'New connections sent to each endpoint through each service address and port (NodePorts: address "*"), ' +
      "from the kernel's counters on the backends maps; restarts at 0 when the element is recreated",
    ['service', 'port_name', 'address', 'protocol', 'port', 'endpoint'],
  );
  /** Series left out by the limit. */
  readonly endpointSeriesDropped = this.gauge(
    'nftproxy_endpoint_connections_series_dropped',
    'Endpoint counter series not exported at the last scrape because of the series limit (--endpoint-metrics)',
  );
  /** Times our tables were found changed by someone else. */
  readonly driftDetected = this.counter(
    'nftproxy_drift_detected_total',
    "Times nftproxy's tables were found changed by another process (each change is put back)",
  );

  /** Change sequence number of each service with a Service change pending. */
  private readonly pendingServices = new Map<string, number>();
  private seq = 0;
  private pendingEndpointChanges = 0;
  private readonly gaps = new Map<string, LocalEndpointGaps>();

  constructor(private readonly opts: ProxyMetricsOptions) {
    // Series that exist from the start, so that rates and sums see them at zero.
    for (const type of Object.values(SyncType)) {
      for (const result of ['success', 'failure']) this.syncs.inc({ type, result }, 0);
    }
    for (const p of Object.values(TrafficPolicyLabel)) this.noLocalEndpoints.set({ traffic_policy: p }, 0);
    if (opts.processMetrics !== false) collectDefaultMetrics({ register: this.registry });
  }

  /** Before each scrape: what is cheaper to compute when asked for. */
  private async collect(): Promise<void> {
    const figures = this.opts.programmed?.();
    if (figures) {
      this.servicesProgrammed.set(figures.services);
      this.endpointsProgrammed.set(figures.endpoints);
    }
    const watches = this.opts.watches?.() ?? [];
    if (watches.length) this.watchFailures.reset();
    for (const w of watches) {
      const labels = { resource: w.resource };
      this.watchConnected.set(labels, w.connected ? 1 : 0);
      this.watchLastEvent.set(labels, w.lastEventAt / 1000);
      this.watchFailures.inc(labels, w.failures);
    }
    await this.readEndpointCounters();
  }

  /**
   * Reads the endpoint counters into their series, the first `maxSeries` in service order;
   * a failed read keeps the last values.
   */
  private async readEndpointCounters(): Promise<void> {
    const ec = this.opts.endpointCounters;
    if (!ec) return;
    const samples = await ec.read().catch(() => undefined);
    if (!samples) return;
    this.endpointConnections.reset();
    const kept = samples.slice(0, ec.maxSeries);
    for (const x of kept) {
      const labels = {
        service: x.service,
        port_name: x.portName,
        address: x.address,
        protocol: x.protocol,
        port: String(x.port),
        endpoint: x.endpoint,
      };
      this.endpointConnections.inc(labels, x.connections);
    }
    this.endpointSeriesDropped.set(samples.length - kept.length);
  }

  /** The exposition of every metric, after reading what is read per scrape. */
  async scrape(): Promise<string> {
    await this.collect();
    return this.registry.metrics();
  }

  /** A change was queued for a sync (`at`: epoch ms). */
  queued(at: number): void {
    this.lastQueued.set(at / 1000);
  }

  /** The proxy saw a Service event; `changed`: the service keys it changed (none for a no-op). */
  serviceEvent(changed: readonly string[]): void {
    this.serviceChangesTotal.inc();
    for (const k of changed) this.pendingServices.set(k, ++this.seq);
    this.serviceChangesPending.set(this.pendingServices.size);
  }

  /** The proxy saw an EndpointSlice event that recorded `changes` endpoint changes (0 for a no-op). */
  endpointSliceEvent(changes: number): void {
    this.endpointChangesTotal.inc();
    this.pendingEndpointChanges += changes;
    this.endpointChangesPending.set(this.pendingEndpointChanges);
  }

  /** A sync starts; pass what this returns to `syncSucceeded`. */
  syncStarting(): number {
    return this.seq;
  }

  /** A sync succeeded. */
  syncSucceeded(r: SyncResult, ctx: SyncContext): void {
    const type = r.full ? SyncType.full : SyncType.partial;
    const seconds = r.durationMs / 1000;
    this.syncs.inc({ type, result: 'success' });
    this.syncDuration.observe(seconds);
    (r.full ? this.fullSyncDuration : this.partialSyncDuration).observe(seconds);
    this.lastSync.set(ctx.at / 1000);
    if (r.bytes > 0) this.transactionBytes.observe(r.bytes);
    if (ctx.conntrack) this.staleFlowsCleared.inc(r.staleFlows);

    for (const c of r.endpointChanges) {
      if (c.triggerTime === undefined || c.triggerTime < this.opts.since) continue;
      const latency = (ctx.at - c.triggerTime) / 1000;
      if (latency >= 0) this.networkProgramming.observe(latency);
    }
    this.pendingEndpointChanges = Math.max(0, this.pendingEndpointChanges - r.endpointChanges.length);
    this.endpointChangesPending.set(this.pendingEndpointChanges);
    // Service changes that arrived while this sync ran (sequence after the mark) stay pending.
    const programmed = (k: string) => (this.pendingServices.get(k) ?? Infinity) <= ctx.mark;
    for (const k of r.full ? [...this.pendingServices.keys()] : r.services) {
      if (programmed(k)) this.pendingServices.delete(k);
    }
    this.serviceChangesPending.set(this.pendingServices.size);

    if (r.full) this.gaps.clear();
    else for (const k of r.services) this.gaps.delete(k);
    for (const [k, g] of ctx.localGaps) this.gaps.set(k, g);
    let internal = 0;
    let external = 0;
    for (const g of this.gaps.values()) {
      internal += g.internal;
      external += g.external;
    }
    this.noLocalEndpoints.set({ traffic_policy: TrafficPolicyLabel.internal }, internal);
    this.noLocalEndpoints.set({ traffic_policy: TrafficPolicyLabel.external }, external);

    if (ctx.conflicts !== undefined) this.addressConflicts.set(ctx.conflicts);
    if (ctx.programmedCounts) {
      this.elementsProgrammed.set(ctx.programmedCounts.elements);
      this.chainsProgrammed.set(ctx.programmedCounts.chains);
    }
  }

  /** Someone else changed our tables. */
  drifted(): void {
    this.driftDetected.inc();
  }

  /** A sync failed (the kernel is unchanged). */
  syncFailed(type: SyncType): void {
    this.syncs.inc({ type, result: 'failure' });
    this.syncFailures.inc();
  }

  private counter<L extends string = never>(name: string, help: string, labelNames: L[] = []): Counter<L> {
    return new Counter({ name, help, labelNames, registers: [this.registry] });
  }

  private gauge<L extends string = never>(name: string, help: string, labelNames: L[] = []): Gauge<L> {
    return new Gauge({ name, help, labelNames, registers: [this.registry] });
  }

  private histogram(name: string, help: string, buckets: number[]): Histogram {
    return new Histogram({ name, help, buckets, registers: [this.registry] });
  }
}
