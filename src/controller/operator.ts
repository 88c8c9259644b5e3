/**
 * `nftproxy run`: keeps one node's nftables in step with the cluster.
 *
 * Source -> store -> dirty keys -> sync queue -> syncer -> nft. Nothing is programmed until
 * the source has read the whole cluster once. Every sync period the tables are checked for
 * drift (a full sync repairs it); every full-sync period everything is recompiled and
 * reconciled. Every change seen, queued and synced is counted in the metrics, served on
 * /metrics. Stopping leaves the rules in place, as kube-proxy does.
 */
import type { ForeignChange, NftBackend } from '../nft/backend.js';
import { type Route, RouteServer } from '../net/http.js';
import { traced } from '../nft/traced.js';
import { ClusterStore, type Dirty, type StoreKind } from '../k8s/store.js';
import type { ClusterSource, SourceSink } from '../k8s/source.js';
import { formatDiagnostic } from '../k8s/types.js';
import { silentLogger, type Logger } from '../telemetry/log.js';
import { FAMILIES, Maps, TABLE } from '../proxy/names.js';
import { AffinityCleaner } from './affinity.js';
import type { ConntrackCleaner } from './conntrack.js';
import { health, healthRoutes } from './health.js';
import { type EndpointCounterSample, ProxyMetrics, SyncType } from './metrics.js';
import { COLLECT_FROM_SERVICES, collectNow, collectSoon } from './memory.js';
import { type Clock, SyncQueue, systemClock } from './queue.js';
import type { Settings } from './settings.js';
import type { PolicyStatusWriter } from './policy-status-writer.js';
import {
  type CounterRead,
  backendElements,
  endpointSamples,
  HealthChecks,
  noLocalEndpoints,
  policyResults,
  startWarnings,
  type SyncOutcome,
} from './reports.js';
import type { ServiceHealthServer } from './service-health.js';
import { EventReason, type EventRecorder } from './events.js';
import { conflictMessage } from '../proxy/builder.js';
import { type SyncResult, Syncer } from './syncer.js';

/** What the operator runs on. */
export interface OperatorDeps {
  settings: Settings;
  source: ClusterSource;
  nft: NftBackend;
  conntrack?: ConntrackCleaner;
  log?: Logger;
  clock?: Clock;
  /** Called after every sync, successful or not (tests, metrics). */
  onSync?: (r: SyncResult | Error) => void;
  /** Retry delays after a failed sync. */
  backoff?: { initialMs: number; maxMs: number };
  /** Writes ProxyPolicy results into their status (API source only). */
  policyStatus?: Pick<PolicyStatusWriter, 'report'>;
  /** Posts Warning Events on Services (API source only); without it problems are only logged. */
  events?: EventRecorder;
  /** Serves the healthCheckNodePorts of externalTrafficPolicy Local services. */
  serviceHealth?: Pick<ServiceHealthServer, 'update' | 'close'>;
  /**
   * Starts watching our tables for commits by anyone else (the kernel's notifications);
   * without it, the tables are checked every sync period.
   */
  watchTables?: (handlers: TableWatchHandlers) => TableWatch;
}

/** A running table watch. */
export interface TableWatch {
  close(): void;
  /** Runs `fn` (one commit of ours) without listening; commits of others meanwhile count as lost. */
  quietly?<T>(fn: () => Promise<T>): Promise<T>;
}

/** What a table watch reports to. */
export interface TableWatchHandlers {
  onChange: (c: ForeignChange) => void;
  /** Notifications were lost: what changed is not known. */
  onLost: () => void;
}

/**
 * With a table watch, the periodic check (which reads every chain, rule and set declaration)
 * is only a safety net: it runs this many sync periods apart.
 */
export const WATCHED_CHECK_PERIODS = 10;

/** The long-running operator. */
export class Operator {
  readonly store: ClusterStore;
  readonly queue: SyncQueue;
  readonly syncer: Syncer;
  /** What /metrics serves: syncs, changes, the programmed rules. */
  readonly metrics: ProxyMetrics;
  private readonly log: Logger;
  private readonly clock: Clock;
  private servers: RouteServer[] = [];
  /** The health checks this node serves, as of the last sync. */
  private readonly checks: HealthChecks;
  private timers: NodeJS.Timeout[] = [];
  private watch: TableWatch | undefined;
  private ready = false;
  private stopped = false;
  /** How the last sync went (policies report it as Programmed). */
  private outcome: SyncOutcome = { ok: false, message: 'not synced yet' };
  /** The address conflicts after the last sync: `service message`. */
  private conflicts = new Set<string>();
  /** The reports of the last sync, under way (tests wait for them). */
  reported: Promise<void> = Promise.resolve();
  /** The port /healthz listens on, once started (0 when disabled). */
  healthPort = 0;
  /** The port /metrics listens on, once started (0 when disabled). */
  metricsPort = 0;

  constructor(private readonly deps: OperatorDeps) {
    this.log = deps.log ?? silentLogger;
    this.clock = deps.clock ?? systemClock;
    const { settings } = deps;
    this.store = new ClusterStore(settings.proxy.nodeName);
    this.checks = new HealthChecks(settings.proxy.nodeName, settings.proxy.serviceProxyName);
    this.metrics = new ProxyMetrics({
      since: this.clock.now(),
      // O(services): computed when scraped, not on every sync.
      programmed: () => this.syncer.current?.stats(),
      watches: () =>
        (deps.source.watches?.() ?? []).map((w) => ({ ...w, connected: w.phase === 'watching' })),
      ...(settings.endpointMetrics > 0 && settings.proxy.endpointCounters && deps.nft.listElementCounters
        ? {
            endpointCounters: {
              read: () => this.endpointCounterSamples(),
              maxSeries: settings.endpointMetrics,
            },
          }
        : {}),
    });
    this.syncer = new Syncer(this.store, settings.proxy, deps.nft, {
      ...(deps.conntrack ? { conntrack: deps.conntrack } : {}),
      affinity: new AffinityCleaner(traced(deps.nft), this.log),
      log: this.log,
    });
    this.queue = new SyncQueue(
      async (req) => {
        // The syncer makes a sync full whatever was asked when it has no applied state.
        const type = req.full || !this.syncer.current ? SyncType.full : SyncType.partial;
        const mark = this.metrics.syncStarting();
        let r: SyncResult;
        try {
          r = await this.syncer.sync(req);
        } catch (e) {
          this.metrics.syncFailed(type);
          this.outcome = { ok: false, message: e instanceof Error ? e.message.split('\n')[0]! : String(e) };
          if (deps.serviceHealth)
            this.checks.update(this.store, type === SyncType.full ? undefined : req.dirty);
          this.report();
          deps.onSync?.(e as Error);
          throw e;
        }
        const conflicts = this.reportConflicts();
        this.metrics.syncSucceeded(r, {
          at: this.clock.now(),
          mark,
          ...(this.syncer.current ? { programmedCounts: this.syncer.current.counts() } : {}),
          localGaps: noLocalEndpoints(
            this.store,
            settings.proxy.nodeName,
            r.services,
            settings.proxy.serviceProxyName,
          ),
          conntrack: deps.conntrack !== undefined,
          conflicts,
        });
        this.outcome = { ok: true };
        if (deps.serviceHealth)
          this.checks.update(this.store, type === SyncType.full ? undefined : req.dirty);
        this.report();
        // A full sync of a large cluster leaves its garbage resident until collected.
        if (type === SyncType.full && this.store.counts().services >= COLLECT_FROM_SERVICES) collectSoon();
        deps.onSync?.(r);
      },
      {
        minIntervalMs: settings.minSyncIntervalMs,
        ...(deps.backoff
          ? { backoffInitialMs: deps.backoff.initialMs, backoffMaxMs: deps.backoff.maxMs }
          : {}),
        clock: this.clock,
        log: this.log,
        onQueued: (at) => this.metrics.queued(at),
      },
    );
  }

  /** The /healthz verdict: rules programmed and no change waiting too long. */
  healthy(): boolean {
    return health(this.queue, 2 * this.deps.settings.syncPeriodMs, this.clock.now()).healthy;
  }

  /**
   * Starts: health and metrics servers, source (waits until synced), first full sync,
   * periodic checks.
   */
  async start(): Promise<void> {
    const { settings } = this.deps;
    await this.serve();
    if (this.stopped) return;
    const sink: SourceSink = {
      upsert: (p) => this.changed(p.kind, this.store.upsert(p)),
      remove: (kind, ns, name) => this.changed(kind, this.store.remove(kind, ns, name)),
      diagnostics: (ds) => {
        for (const d of ds) this.log[d.severity === 'error' ? 'error' : 'warn'](formatDiagnostic(d));
      },
      keys: (kind) => this.store.keysOf(kind),
    };
    this.log.info('waiting for the cluster state', { node: settings.proxy.nodeName });
    if (this.stopped) return;
    await this.deps.source.start(sink);
    if (this.stopped) return void (await this.deps.source.stop()); // stop() came meanwhile
    this.ready = true;
    this.log.info('cluster state read; programming', this.store.counts());
    for (const w of startWarnings(this.store, settings.proxy)) this.log.warn(w);
    // What reading the cluster left (list pages) goes before the first sync adds its own.
    if (this.store.counts().services >= COLLECT_FROM_SERVICES) collectNow();
    this.watch = this.watchTables();
    const watch = this.watch;
    if (watch?.quietly) this.syncer.quiet = (fn) => watch.quietly!(fn);
    this.queue.requestFull('start');
    const checkMs = this.watch ? WATCHED_CHECK_PERIODS * settings.syncPeriodMs : settings.syncPeriodMs;
    this.every(checkMs, async () => {
      if (await this.syncer.drifted().catch(() => false)) {
        this.log.warn('our nftables tables were changed from outside; repairing');
        this.metrics.drifted();
        this.queue.requestFull('drift');
      }
    });
    if (settings.fullSyncPeriodMs > 0)
      this.every(settings.fullSyncPeriodMs, async () => this.queue.requestFull('periodic'));
  }

  /** Stops watching and syncing; the rules stay in the kernel. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    this.watch?.close();
    await this.deps.source.stop();
    await this.queue.stop();
    await this.reported;
    await this.deps.serviceHealth?.close();
    for (const server of this.servers) await server.close();
    this.log.info('stopped; rules left in place');
  }

  /**
   * Listens for /metrics and for /healthz and /livez, on one server when both have the same
   * bind address (an empty one serves nothing).
   */
  private async serve(): Promise<void> {
    const { settings } = this.deps;
    const parts = [
      {
        bind: settings.metricsBindAddress,
        what: 'metrics',
        log: 'serving /metrics',
        routes: new Map<string, Route>([
          [
            '/metrics',
            async () => ({
              status: 200,
              type: this.metrics.registry.contentType,
              body: await this.metrics.scrape(),
            }),
          ],
        ]),
        bound: (port: number) => (this.metricsPort = port),
      },
      {
        bind: settings.healthzBindAddress,
        what: 'healthz',
        log: 'serving /healthz and /livez',
        routes: healthRoutes(this.queue, 2 * settings.syncPeriodMs, this.clock, () =>
          this.store.nodeDraining(),
        ),
        bound: (port: number) => (this.healthPort = port),
      },
    ].filter((p) => p.bind);
    for (const bind of new Set(parts.map((p) => p.bind))) {
      const here = parts.filter((p) => p.bind === bind);
      const server = new RouteServer(new Map(here.flatMap((p) => [...p.routes])));
      const port = await server.listen(bind, here.map((p) => p.what).join(' and '));
      this.servers.push(server);
      if (this.stopped) return void (await server.close()); // stop() came meanwhile
      for (const p of here) {
        p.bound(port);
        this.log.info(p.log, { address: bind, port });
      }
    }
  }

  /** Starts the table watch, if there is one; undefined if none or it cannot start. */
  private watchTables(): TableWatch | undefined {
    const start = this.deps.watchTables;
    if (!start) return undefined;
    try {
      return start({
        onChange: (c) => {
          const sets: string[] = [];
          for (const [family, t] of c.tables) {
            if (t.skeleton) sets.push(`${family} (chains, rules or sets)`);
            for (const set of t.elements.keys()) sets.push(`${family} ${set}`);
          }
          this.log.warn('our nftables tables were changed from outside; putting back what changed', {
            process: c.process,
            pid: c.pid,
            changed: sets,
          });
          this.metrics.drifted();
          this.queue.requestRepair(c.tables);
        },
        onLost: () => {
          this.log.warn('nftables notifications were lost; comparing our tables with a full sync');
          this.metrics.drifted();
          this.queue.requestFull('drift');
        },
      });
    } catch (e) {
      this.log.warn('cannot watch nftables for changes; checking every sync period instead', {
        error: e instanceof Error ? e.message : String(e),
      });
      return undefined;
    }
  }

  /** An event from the source changed the store (or not): count it, queue what it dirtied. */
  private changed(kind: StoreKind, d: Dirty): void {
    // One endpoint change is recorded per service whose slices changed (see ClusterStore).
    if (kind === 'Service') this.metrics.serviceEvent(d.services);
    else if (kind === 'EndpointSlice') this.metrics.endpointSliceEvent(d.services.length);
    this.dirty(d);
  }

  private dirty(d: Dirty): void {
    if (!this.ready) return; // the first full sync will see everything
    if (d.node) this.queue.requestFull('node');
    else if (d.services.length) this.queue.markDirty(d.services);
    // A policy that selects nothing causes no sync, but its status must still say so.
    else if (d.policies?.length) this.report();
  }

  /**
   * Tells the world what the store and the last sync came to: policy statuses and service
   * health checks. Runs in the background, one report after another; failures are logged.
   */
  private report(): void {
    const { policyStatus, serviceHealth } = this.deps;
    if (!policyStatus && !serviceHealth) return;
    const policies = policyStatus ? policyResults(this.store, this.outcome) : [];
    // Copied: the report runs later, the checks move on with each sync.
    const checks = serviceHealth ? new Map(this.checks.current) : new Map();
    this.reported = this.reported.then(async () => {
      try {
        if (policyStatus) await policyStatus.report(policies);
        for (const p of (await serviceHealth?.update(checks)) ?? []) {
          this.log.warn('cannot serve a health check node port', { ...p });
          const [namespace, name] = p.service.split('/') as [string, string];
          void this.deps.events?.warn({ namespace, name }, EventReason.healthCheckFailed, p.message);
        }
      } catch (e) {
        this.log.error('reporting failed', { error: e instanceof Error ? e.message : String(e) });
      }
    });
  }

  /** The kernel's connection counters of every programmed endpoint (backends maps, both families). */
  private async endpointCounterSamples(): Promise<EndpointCounterSample[] | undefined> {
    const builder = this.syncer.current;
    const list = this.deps.nft.listElementCounters?.bind(this.deps.nft);
    if (!builder || !list) return undefined;
    const known = backendElements(builder);
    const reads: CounterRead[] = [];
    for (const family of FAMILIES)
      for (const set of [Maps.backends, Maps.nodeportBackends]) {
        const elements = known.get(`${family} ${set}`);
        const counters = elements ? await list(family, TABLE, set, elements) : undefined;
        reads.push({ family, set, counters: counters ?? new Map() });
      }
    return endpointSamples(builder, reads);
  }

  /**
   * Posts a Warning Event on each Service that newly lost an address to another; returns how
   * many addresses are lost now.
   */
  private reportConflicts(): number {
    const conflicts = this.syncer.current?.conflicts() ?? [];
    const now = new Set<string>();
    for (const c of conflicts) {
      const message = conflictMessage(c);
      const id = `${c.unit.service} ${message}`;
      now.add(id);
      if (this.conflicts.has(id)) continue;
      const [namespace, name] = c.unit.service.split('/') as [string, string];
      void this.deps.events?.warn({ namespace, name }, EventReason.addressConflict, message);
    }
    this.conflicts = now;
    return conflicts.length;
  }

  private every(ms: number, fn: () => Promise<void>): void {
    const t = setInterval(() => void fn(), ms);
    t.unref();
    this.timers.push(t);
  }
}
