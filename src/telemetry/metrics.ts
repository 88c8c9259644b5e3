/**
 * Prometheus metrics: a small registry (counters, gauges, histograms, with labels) rendered in
 * the text exposition format 0.0.4, the set of metrics nftproxy exports (kube-proxy's names and
 * meanings where they apply, `nftproxy_` ones for the rest), and the /metrics HTTP server.
 *
 * The registry is plain data and pure rendering; time comes in as arguments, so tests need no
 * clock. See docs/metrics.md for what each metric means.
 */
import { createServer, type Server, type ServerResponse } from 'node:http';
import { closeServer, listenOn } from '../net/http.js';
import type { SyncResult } from '../controller/syncer.js';

/** Metric types of the exposition format. */
export const MetricType = { counter: 'counter', gauge: 'gauge', histogram: 'histogram' } as const;
export type MetricType = (typeof MetricType)[keyof typeof MetricType];

/** The content type of the text exposition format. */
export const EXPOSITION_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** Label values of one child, by label name. */
export type LabelValues<L extends string> = { readonly [K in L]: string };

/** What every metric is declared with. */
export interface MetricOptions<L extends string> {
  /** `[a-zA-Z_:][a-zA-Z0-9_:]*`; counters end in `_total`. */
  name: string;
  /** One line saying what is measured (and, for ours, how it is counted). */
  help: string;
  /** Label names, in the order they are rendered. */
  labelNames?: readonly L[];
}

/** A histogram's declaration: its upper bounds (the `+Inf` bucket is implied). */
export interface HistogramOptions<L extends string> extends MetricOptions<L> {
  buckets: readonly number[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** `count` upper bounds `start`, `start * factor`, ... (as Prometheus' ExponentialBuckets). */
export function exponentialBuckets(start: number, factor: number, count: number): number[] {
  if (!(start > 0) || !(factor > 1) || !(count >= 1))
    throw new Error(
      `exponential buckets need start > 0, factor > 1, count >= 1; got ${start}, ${factor}, ${count}`,
    );
  const out: number[] = [];
  for (let b = start, i = 0; i < count; i++, b *= factor) out.push(b);
  return out;
}

/** `count` upper bounds `start`, `start + width`, ... (as Prometheus' LinearBuckets). */
export function linearBuckets(start: number, width: number, count: number): number[] {
  if (!(width > 0) || !(count >= 1))
    throw new Error(`linear buckets need width > 0, count >= 1; got ${width}, ${count}`);
  return Array.from({ length: count }, (_, i) => start + i * width);
}

/** A sample value as the format writes it: Go float syntax, `+Inf`, `-Inf`, `NaN`. */
export function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

/** A label value escaped for the format: backslash, double quote and newline. */
export function escapeLabelValue(v: string): string {
  return v.replace(/[\\"\n]/g, (c) => (c === '\\' ? '\\\\' : c === '"' ? '\\"' : '\\n'));
}

/** A HELP text escaped for the format: backslash and newline (quotes stay). */
export function escapeHelp(v: string): string {
  return v.replace(/[\\\n]/g, (c) => (c === '\\' ? '\\\\' : '\\n'));
}

function labelSet(names: readonly string[], values: readonly string[], extra?: [string, string]): string {
  const parts = names.map((n, i) => `${n}="${escapeLabelValue(values[i]!)}"`);
  if (extra) parts.push(`${extra[0]}="${escapeLabelValue(extra[1])}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

/** What every metric family shares: name, help, labels and one child per label values. */
abstract class Metric<L extends string, C> {
  abstract readonly type: MetricType;
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly L[];
  private readonly children = new Map<string, { values: string[]; child: C }>();

  constructor(opts: MetricOptions<L>) {
    if (!METRIC_NAME.test(opts.name))
      throw new Error(`not a valid metric name: ${JSON.stringify(opts.name)}`);
    const names = opts.labelNames ?? [];
    for (const n of names) {
      if (!LABEL_NAME.test(n) || n.startsWith('__'))
        throw new Error(`not a valid label name: ${JSON.stringify(n)} of metric ${opts.name}`);
    }
    if (new Set(names).size !== names.length)
      throw new Error(`metric ${opts.name} repeats a label name: ${JSON.stringify(names)}`);
    this.name = opts.name;
    this.help = opts.help;
    this.labelNames = names;
  }

  /** The child with these label values, created (at zero) on first use. */
  labels(values: LabelValues<L>): C {
    const given = values as Readonly<Record<string, unknown>>;
    const ordered = this.labelNames.map((n) => {
      const v = given[n];
      if (typeof v !== 'string')
        throw new Error(
          `metric ${this.name}: label ${n} missing or not a string in ${JSON.stringify(values)}`,
        );
      return v;
    });
    for (const k of Object.keys(given)) {
      if (!(this.labelNames as readonly string[]).includes(k))
        throw new Error(
          `metric ${this.name} has no label ${JSON.stringify(k)} (labels: ${this.labelNames.join(', ') || 'none'})`,
        );
    }
    const key = ordered.join('\u0000');
    let entry = this.children.get(key);
    if (!entry) this.children.set(key, (entry = { values: ordered, child: this.newChild() }));
    return entry.child;
  }

  /** Drops every child (series that went away stop being exported). */
  clear(): void {
    this.children.clear();
  }

  /** The only child of a metric without labels. */
  protected get single(): C {
    if (this.labelNames.length)
      throw new Error(`metric ${this.name} has labels (${this.labelNames.join(', ')}); use labels({...})`);
    return this.labels({} as LabelValues<L>);
  }

  /** HELP, TYPE and the samples of every child, one line each. */
  render(out: string[]): void {
    // A metric without labels has its one child from the start, at zero.
    if (!this.labelNames.length) void this.single;
    out.push(`# HELP ${this.name} ${escapeHelp(this.help)}`, `# TYPE ${this.name} ${this.type}`);
    for (const { values, child } of this.children.values()) this.samples(values, child, out);
  }

  protected abstract newChild(): C;
  protected abstract samples(values: string[], child: C, out: string[]): void;
}

/** One counter value. */
export class CounterChild {
  private v = 0;

  /** Adds `by` (default 1); a counter never decreases. */
  inc(by = 1): void {
    if (!(by >= 0) || by === Infinity)
      throw new Error(`a counter only goes up by a finite amount, got ${by}`);
    this.v += by;
  }

  /** The current value. */
  get value(): number {
    return this.v;
  }
}

/** A cumulative count (`_total`). */
export class Counter<L extends string = never> extends Metric<L, CounterChild> {
  readonly type = MetricType.counter;

  /** Adds `by` (default 1) to the counter without labels. */
  inc(by = 1): void {
    this.single.inc(by);
  }

  /** The value of the counter without labels. */
  get value(): number {
    return this.single.value;
  }

  protected newChild(): CounterChild {
    return new CounterChild();
  }

  protected samples(values: string[], child: CounterChild, out: string[]): void {
    out.push(`${this.name}${labelSet(this.labelNames, values)} ${formatValue(child.value)}`);
  }
}

/** One gauge value. */
export class GaugeChild {
  private v = 0;

  /** Sets the value. */
  set(v: number): void {
    this.v = v;
  }

  /** Adds `by` (default 1; negative to subtract). */
  inc(by = 1): void {
    this.v += by;
  }

  /** The current value. */
  get value(): number {
    return this.v;
  }
}

/** A value that goes up and down. */
export class Gauge<L extends string = never> extends Metric<L, GaugeChild> {
  readonly type = MetricType.gauge;

  /** Sets the gauge without labels. */
  set(v: number): void {
    this.single.set(v);
  }

  /** Adds to the gauge without labels. */
  inc(by = 1): void {
    this.single.inc(by);
  }

  /** The value of the gauge without labels. */
  get value(): number {
    return this.single.value;
  }

  protected newChild(): GaugeChild {
    return new GaugeChild();
  }

  protected samples(values: string[], child: GaugeChild, out: string[]): void {
    out.push(`${this.name}${labelSet(this.labelNames, values)} ${formatValue(child.value)}`);
  }
}

/** One histogram's buckets, sum and count. */
export class HistogramChild {
  /** Observations per bucket (not cumulative); the last one is `+Inf`. */
  private readonly counts: number[];
  private s = 0;
  private n = 0;

  constructor(private readonly bounds: readonly number[]) {
    this.counts = new Array<number>(bounds.length + 1).fill(0);
  }

  /** Records one value. */
  observe(v: number): void {
    if (Number.isNaN(v)) throw new Error(`cannot observe ${v}`);
    // The first bucket whose upper bound is >= v (bounds are sorted).
    let lo = 0;
    let hi = this.bounds.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (v <= this.bounds[mid]!) hi = mid;
      else lo = mid + 1;
    }
    this.counts[lo]!++;
    this.s += v;
    this.n++;
  }

  /** Sum of the values observed. */
  get sum(): number {
    return this.s;
  }

  /** Number of values observed. */
  get count(): number {
    return this.n;
  }

  /** Cumulative counts per upper bound, ending with `+Inf`. */
  cumulative(): [number, number][] {
    let acc = 0;
    return this.counts.map((c, i) => [this.bounds[i] ?? Infinity, (acc += c)]);
  }
}

/** A distribution over fixed buckets (`_bucket{le}`, `_sum`, `_count`). */
export class Histogram<L extends string = never> extends Metric<L, HistogramChild> {
  readonly type = MetricType.histogram;
  /** Upper bounds, ascending, without `+Inf`. */
  readonly buckets: readonly number[];

  constructor(opts: HistogramOptions<L>) {
    super(opts);
    if ((this.labelNames as readonly string[]).includes('le'))
      throw new Error(`histogram ${opts.name} cannot have a label "le"`);
    const bounds = opts.buckets.at(-1) === Infinity ? opts.buckets.slice(0, -1) : [...opts.buckets];
    for (let i = 0; i < bounds.length; i++) {
      if (!Number.isFinite(bounds[i]) || (i > 0 && bounds[i]! <= bounds[i - 1]!))
        throw new Error(
          `histogram ${opts.name}: buckets must be finite and increasing, got ${JSON.stringify(opts.buckets)}`,
        );
    }
    this.buckets = bounds;
  }

  /** Records one value in the histogram without labels. */
  observe(v: number): void {
    this.single.observe(v);
  }

  /** The child of the histogram without labels (sum, count, buckets). */
  get values(): HistogramChild {
    return this.single;
  }

  protected newChild(): HistogramChild {
    return new HistogramChild(this.buckets);
  }

  protected samples(values: string[], child: HistogramChild, out: string[]): void {
    for (const [le, n] of child.cumulative()) {
      out.push(`${this.name}_bucket${labelSet(this.labelNames, values, ['le', formatValue(le)])} ${n}`);
    }
    const labels = labelSet(this.labelNames, values);
    out.push(
      `${this.name}_sum${labels} ${formatValue(child.sum)}`,
      `${this.name}_count${labels} ${child.count}`,
    );
  }
}

/** A set of metric families, rendered together. */
export class Registry {
  private readonly families: Metric<string, unknown>[] = [];
  private readonly collectors: (() => void)[] = [];

  /** Declares a counter. */
  counter<L extends string = never>(opts: MetricOptions<L>): Counter<L> {
    return this.add(new Counter(opts));
  }

  /** Declares a gauge. */
  gauge<L extends string = never>(opts: MetricOptions<L>): Gauge<L> {
    return this.add(new Gauge(opts));
  }

  /** Declares a histogram. */
  histogram<L extends string = never>(opts: HistogramOptions<L>): Histogram<L> {
    return this.add(new Histogram(opts));
  }

  /** Runs `fn` before every rendering: for values that are cheaper to compute when scraped. */
  onCollect(fn: () => void): void {
    this.collectors.push(fn);
  }

  /** Every family in the text exposition format 0.0.4, in declaration order. */
  render(): string {
    for (const c of this.collectors) c();
    const out: string[] = [];
    for (const f of this.families) f.render(out);
    return out.length ? out.join('\n') + '\n' : '';
  }

  private add<M extends Metric<string, unknown>>(m: M): M {
    if (this.families.some((f) => f.name === m.name))
      throw new Error(`metric ${JSON.stringify(m.name)} is already registered`);
    this.families.push(m);
    return m;
  }
}

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
   * The connection counters of service endpoints, read from the kernel before each scrape
   * (undefined: not exported). At most `maxSeries` series are exported.
   */
  endpointCounters?: { read: () => Promise<EndpointCounterSample[] | undefined>; maxSeries: number };
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
  /** Every family below, for the server. */
  readonly registry = new Registry();

  // kube-proxy's, with its names, help texts and buckets (docs/metrics.md).

  /** Duration of every successful sync. */
  readonly syncDuration = this.registry.histogram({
    name: 'kubeproxy_sync_proxy_rules_duration_seconds',
    help: 'SyncProxyRules latency in seconds: successful syncs, full and partial',
    buckets: SYNC_BUCKETS,
  });
  /** Duration of successful full syncs. */
  readonly fullSyncDuration = this.registry.histogram({
    name: 'kubeproxy_sync_full_proxy_rules_duration_seconds',
    help: 'SyncProxyRules latency in seconds for full resyncs',
    buckets: SYNC_BUCKETS,
  });
  /** Duration of successful partial syncs. */
  readonly partialSyncDuration = this.registry.histogram({
    name: 'kubeproxy_sync_partial_proxy_rules_duration_seconds',
    help: 'SyncProxyRules latency in seconds for partial resyncs',
    buckets: SYNC_BUCKETS,
  });
  /** From an endpoint change's trigger time to the end of the sync that programmed it. */
  readonly networkProgramming = this.registry.histogram({
    name: 'kubeproxy_network_programming_duration_seconds',
    help:
      "In Cluster Network Programming Latency in seconds: from an EndpointSlice's " +
      'last-change-trigger-time to the end of the sync that programmed it',
    buckets: NETWORK_PROGRAMMING_BUCKETS,
  });
  /** When the last successful sync ended (epoch seconds). */
  readonly lastSync = this.registry.gauge({
    name: 'kubeproxy_sync_proxy_rules_last_timestamp_seconds',
    help: 'The last time proxy rules were successfully synced',
  });
  /** When a change was last queued (epoch seconds). */
  readonly lastQueued = this.registry.gauge({
    name: 'kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds',
    help: 'The last time a sync of proxy rules was queued',
  });
  /** Endpoint changes not yet programmed. */
  readonly endpointChangesPending = this.registry.gauge({
    name: 'kubeproxy_sync_proxy_rules_endpoint_changes_pending',
    help:
      'Pending proxy rules Endpoint changes: EndpointSlice changes (one per service whose ' +
      'endpoints they change) that no successful sync has programmed yet',
  });
  /** EndpointSlice events seen. */
  readonly endpointChangesTotal = this.registry.counter({
    name: 'kubeproxy_sync_proxy_rules_endpoint_changes_total',
    help: 'Cumulative proxy rules Endpoint changes: EndpointSlice adds, updates and deletes seen, effective or not',
  });
  /** Services with a Service change not yet programmed. */
  readonly serviceChangesPending = this.registry.gauge({
    name: 'kubeproxy_sync_proxy_rules_service_changes_pending',
    help:
      'Pending proxy rules Service changes: services whose Service object changed since a ' +
      'successful sync last programmed them',
  });
  /** Service events seen. */
  readonly serviceChangesTotal = this.registry.counter({
    name: 'kubeproxy_sync_proxy_rules_service_changes_total',
    help: 'Cumulative proxy rules Service changes: Service adds, updates and deletes seen, effective or not',
  });
  /** Failed syncs. */
  readonly syncFailures = this.registry.counter({
    name: 'kubeproxy_sync_proxy_rules_nftables_sync_failures_total',
    help: 'Cumulative proxy nftables sync failures',
  });
  /** Service ports with a Local policy, endpoints elsewhere and none here. */
  readonly noLocalEndpoints = this.registry.gauge<'traffic_policy'>({
    name: 'kubeproxy_sync_proxy_rules_no_local_endpoints_total',
    help:
      'Number of services with a Local traffic policy and no endpoints: service ports with ' +
      'usable endpoints elsewhere but none on this node',
    labelNames: ['traffic_policy'],
  });

  // nftproxy's own.
  /** Services programmed (set when scraped). */
  readonly servicesProgrammed = this.registry.gauge({
    name: 'nftproxy_services_programmed',
    help: 'Services with at least one address programmed (computed when scraped)',
  });
  /** Backend slots programmed (set when scraped). */
  readonly endpointsProgrammed = this.registry.gauge({
    name: 'nftproxy_endpoints_programmed',
    help: 'Backends programmed: endpoints summed over the service addresses and ports forwarding to them (computed when scraped)',
  });
  /** Set and map elements in our tables. */
  readonly elementsProgrammed = this.registry.gauge({
    name: 'nftproxy_elements_programmed',
    help: "Set and map elements in nftproxy's tables after the last successful sync",
  });
  /** Chains in our tables. */
  readonly chainsProgrammed = this.registry.gauge({
    name: 'nftproxy_chains_programmed',
    help: "Chains in nftproxy's tables after the last successful sync",
  });
  /** Addresses lost to another service. */
  readonly addressConflicts = this.registry.gauge({
    name: 'nftproxy_address_conflicts',
    help:
      'Service addresses (IP or NodePort, protocol, port) not programmed because another Service ' +
      'holds them, after the last successful sync; each has a Warning Event AddressConflict',
  });
  /** Sizes of the nft scripts sent. */
  readonly transactionBytes = this.registry.histogram({
    name: 'nftproxy_transaction_bytes',
    help: 'Size of the nft script of each successful sync that sent one',
    buckets: TRANSACTION_BYTES_BUCKETS,
  });
  /** Syncs by type and result. */
  readonly syncs = this.registry.counter<'type' | 'result'>({
    name: 'nftproxy_syncs_total',
    help: 'Syncs run, by type (full, partial) and result (success, failure)',
    labelNames: ['type', 'result'],
  });
  /** Conntrack flow filters run. */
  readonly staleFlowsCleared = this.registry.counter({
    name: 'nftproxy_stale_flows_cleared_total',
    help: 'Stale conntrack flow filters run after syncs (UDP/SCTP flows to removed endpoints or newly served addresses)',
  });
  /** Each watched resource: 1 while watching. */
  readonly watchConnected = this.registry.gauge<'resource'>({
    name: 'nftproxy_watch_connected',
    help: 'Whether the watch of each API resource is connected: 1 watching, 0 listing, backing off after a failure, or not installed (set when scraped)',
    labelNames: ['resource'],
  });
  /** When each watched resource last heard from the API server. */
  readonly watchLastEvent = this.registry.gauge<'resource'>({
    name: 'nftproxy_watch_last_event_timestamp_seconds',
    help: 'When the API server last answered a list or watch, or sent a watch event (bookmarks included), for each resource (set when scraped)',
    labelNames: ['resource'],
  });
  /** Failed lists and watches per resource. */
  readonly watchFailures = this.registry.counter<'resource'>({
    name: 'nftproxy_watch_failures_total',
    help: 'Failed lists and watches of each API resource, each retried after a backoff',
    labelNames: ['resource'],
  });
  /** Per endpoint connection counters (opt-in, bounded). */
  readonly endpointConnections = this.registry.counter<
    'service' | 'port_name' | 'address' | 'protocol' | 'port' | 'endpoint'
  >({
    name: 'nftproxy_endpoint_connections_total',
    help:
      'New connections sent to each endpoint through each service address and port (NodePorts: address "*"), ' +
      "from the kernel's counters on the backends maps; restarts at 0 when the element is recreated",
    labelNames: ['service', 'port_name', 'address', 'protocol', 'port', 'endpoint'],
  });
  /** Series left out by the limit. */
  readonly endpointSeriesDropped = this.registry.gauge({
    name: 'nftproxy_endpoint_connections_series_dropped',
    help: 'Endpoint counter series not exported at the last scrape because of the series limit (--endpoint-metrics)',
  });
  /** Times our tables were found changed by someone else. */
  readonly driftDetected = this.registry.counter({
    name: 'nftproxy_drift_detected_total',
    help: "Times nftproxy's tables were found changed by another process (each change is put back)",
  });

  /** Change sequence number of each service with a Service change pending. */
  private readonly pendingServices = new Map<string, number>();
  private seq = 0;
  private readonly gaps = new Map<string, LocalEndpointGaps>();

  constructor(private readonly opts: ProxyMetricsOptions) {
    // Children that exist from the start, so that rates and sums see them at zero.
    for (const type of Object.values(SyncType)) {
      for (const result of ['success', 'failure']) this.syncs.labels({ type, result });
    }
    for (const p of Object.values(TrafficPolicyLabel)) this.noLocalEndpoints.labels({ traffic_policy: p });
    this.registry.onCollect(() => {
      const figures = this.opts.programmed?.();
      if (!figures) return;
      this.servicesProgrammed.set(figures.services);
      this.endpointsProgrammed.set(figures.endpoints);
    });
    this.registry.onCollect(() => {
      for (const w of this.opts.watches?.() ?? []) {
        const labels = { resource: w.resource };
        this.watchConnected.labels(labels).set(w.connected ? 1 : 0);
        this.watchLastEvent.labels(labels).set(w.lastEventAt / 1000);
        const failures = this.watchFailures.labels(labels);
        failures.inc(Math.max(0, w.failures - failures.value));
      }
    });
  }

  /**
   * Reads the endpoint counters into their series (before a scrape), the first `maxSeries`
   * in service order; a failed read keeps the last values.
   */
  async refreshEndpoints(): Promise<void> {
    const ec = this.opts.endpointCounters;
    if (!ec) return;
    const samples = await ec.read().catch(() => undefined);
    if (!samples) return;
    this.endpointConnections.clear();
    const kept = samples.slice(0, ec.maxSeries);
    for (const x of kept) {
      this.endpointConnections
        .labels({
          service: x.service,
          port_name: x.portName,
          address: x.address,
          protocol: x.protocol,
          port: String(x.port),
          endpoint: x.endpoint,
        })
        .inc(x.connections);
    }
    this.endpointSeriesDropped.set(samples.length - kept.length);
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
    this.endpointChangesPending.inc(changes);
  }

  /** A sync starts; pass what this returns to `syncSucceeded`. */
  syncStarting(): number {
    return this.seq;
  }

  /** A sync succeeded. */
  syncSucceeded(r: SyncResult, ctx: SyncContext): void {
    const type = r.full ? SyncType.full : SyncType.partial;
    const seconds = r.durationMs / 1000;
    this.syncs.labels({ type, result: 'success' }).inc();
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
    this.endpointChangesPending.set(
      Math.max(0, this.endpointChangesPending.value - r.endpointChanges.length),
    );
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
    this.noLocalEndpoints.labels({ traffic_policy: TrafficPolicyLabel.internal }).set(internal);
    this.noLocalEndpoints.labels({ traffic_policy: TrafficPolicyLabel.external }).set(external);

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
    this.syncs.labels({ type, result: 'failure' }).inc();
    this.syncFailures.inc();
  }
}

/** The /metrics HTTP server. */
export class MetricsServer {
  private server: Server | undefined;

  /** `before`: runs (awaited) before each scrape renders, to read what is read per scrape. */
  constructor(
    private readonly registry: Pick<Registry, 'render'>,
    private readonly before?: () => Promise<void>,
  ) {}

  /** Listens on `host:port` (port 0: any free one); resolves with the bound port. */
  async listen(bind: string): Promise<number> {
    this.server = createServer((req, res) => {
      const path = (req.url ?? '').split('?')[0];
      if (path !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      } else if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { 'content-type': 'text/plain', allow: 'GET, HEAD' }).end('method not allowed\n');
      } else {
        void this.answer(req.method === 'HEAD', res);
      }
    });
    return listenOn(this.server, bind, 'metrics');
  }

  /** Renders the registry (after `before`) into one answer; a failure is a 500 saying why. */
  private async answer(head: boolean, res: ServerResponse): Promise<void> {
    let body: string;
    try {
      await this.before?.();
      body = this.registry.render();
    } catch (e) {
      res
        .writeHead(500, { 'content-type': 'text/plain' })
        .end(`cannot collect metrics: ${e instanceof Error ? e.message : String(e)}\n`);
      return;
    }
    res.writeHead(200, { 'content-type': EXPOSITION_CONTENT_TYPE }).end(head ? '' : body);
  }

  /** Stops listening and drops open connections. */
  async close(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (s) await closeServer(s);
  }
}
