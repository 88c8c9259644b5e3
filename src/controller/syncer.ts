/**
 * One sync: from the store and the last applied state to one nft transaction.
 *
 * Full: compile every service, read what the kernel holds now (chains, rules and set
 * declarations, then each set's elements in turn), plan, apply. At start this adopts
 * identical rules without a change (or replaces them in one transaction); after a failure or
 * when someone changed our tables, it repairs exactly what differs.
 * Partial: recompile the dirty services in the builder and apply its delta, the set
 * difference of their lines before and after.
 * A failed transaction leaves the kernel unchanged; the syncer then forgets its builder, so
 * the next sync (the queue makes it full) starts from what the kernel really holds.
 */
import type { NftBackend, TableChange } from '../nft/backend.js';
import type { Command, Family } from '../nft/ir.js';
import {
  createTable,
  deltaTransaction,
  type DesiredTable,
  type Diff,
  type DiffStats,
  emptyStats,
  type TableDescription,
  TablePlan,
} from '../nft/diff.js';
import type { ClusterStore, EndpointChange } from '../k8s/store.js';
import { formatDiagnostic } from '../k8s/types.js';
import type { RulesetBuilder, RulesetDelta } from '../proxy/builder.js';
import { buildRuleset, effectiveConfig, type ServiceSource, serviceContextOf } from '../proxy/compile.js';
import type { ProxyConfig } from '../proxy/config.js';
import { TABLE } from '../proxy/names.js';
import { compileService, proxied, type ServiceContext, type ServiceContribution } from '../proxy/service.js';
import type { Attributes, Link, Span, SpanContext } from '@opentelemetry/api';
import { silentLogger, type Logger } from '../telemetry/log.js';
import { Attr, inSpan, recordFailure, Spans, tracer } from '../telemetry/tracing.js';
import { traced } from '../nft/traced.js';
import {
  type ConntrackCleaner,
  portChangesOfDelta,
  portStateOf,
  type StaleFlow,
  staleFlows,
  staleFlowsInTable,
} from './conntrack.js';
import type { AffinityCleaner } from './affinity.js';
import type { SyncRequest } from './queue.js';

/**
 * Transactions with this many element entries or more are applied with the table watch not
 * listening (the kernel builds a notification per element for a listener).
 */
export const QUIET_FROM = 1000;

/** Element entries of a transaction (a block of lines counts once: an estimate). */
function elementEntries(commands: Command[]): number {
  let n = 0;
  for (const c of commands) {
    const o = Object.values(c)[0] as Record<string, unknown>;
    const e = o.element as { lines?: unknown[] } | undefined;
    if (e?.lines) n += e.lines.length;
  }
  return n;
}

/** At most this many endpoint changes are linked from one sync's span. */
const MAX_LINKS = 128;

/** Span attributes of a transaction about to be applied. */
function diffAttributes(diff: Diff): Attributes {
  return {
    [Attr.commands]: diff.tx.commands.length,
    [Attr.elementsAdded]: diff.stats.elementsAdded,
    [Attr.elementsRemoved]: diff.stats.elementsDeleted,
    [Attr.tablesReplaced]: diff.stats.tablesReplaced,
  };
}

/** What a sync did. */
export interface SyncResult {
  full: boolean;
  /** The transaction's counts; all zero when nothing had to change. */
  diff: Diff['stats'];
  /** Commands sent to nft (0: nothing to do, e.g. identical rules adopted). */
  commands: number;
  /** Size of the nft script sent (0 when nothing was sent). */
  bytes: number;
  servicesSynced: number;
  /** Keys of the services recompiled (all of them in a full sync). */
  services: string[];
  /** The endpoint changes this sync programmed (trigger times for latency and traces). */
  endpointChanges: EndpointChange[];
  staleFlows: number;
  durationMs: number;
}

/** Options of the syncer. */
export interface SyncerOptions {
  conntrack?: ConntrackCleaner;
  /** Deletes affinity entries of endpoints that went away. */
  affinity?: AffinityCleaner;
  log?: Logger;
}

/** What the stages of a sync produced. */
interface Outcome {
  diff: Diff;
  /** The conntrack flows the sync made stale. */
  flows: StaleFlow[];
  services: string[];
  bytes: number;
  /** Whether an affinity address lost an endpoint (its entries may be stale). */
  affinityLost: boolean;
}

/** Keeps one node's nftables in step with the store. */
export class Syncer {
  private builder: RulesetBuilder | undefined;
  /**
   * What every service's compile reads besides the service, fixed at each full sync (a change
   * to any of it makes the next sync full).
   */
  private context: Omit<ServiceContext, 'policy'> | undefined;
  private readonly log: Logger;
  /** The span of each endpoint change linked so far, so a retry links the same one. */
  private readonly changeSpans = new WeakMap<EndpointChange, SpanContext>();
  /** Runs a large commit with the table watch not listening (TableMonitor.quietly), if set. */
  quiet: (<T>(fn: () => Promise<T>) => Promise<T>) | undefined;

  /** The backend, its applies traced (spans of their stages under the sync's). */
  private readonly nft: NftBackend;

  constructor(
    private readonly store: ClusterStore,
    private readonly config: ProxyConfig,
    nft: NftBackend,
    private readonly opts: SyncerOptions = {},
  ) {
    this.nft = traced(nft);
    this.log = opts.log ?? silentLogger;
  }

  /** The builder behind the applied ruleset, if a sync succeeded since the last failure. */
  get current(): RulesetBuilder | undefined {
    return this.builder;
  }

  /**
   * Runs one sync; throws if the transaction failed. Traced: one root span per sync, linked
   * to the EndpointSlice changes it programs, with a child span per stage.
   */
  async sync(req: SyncRequest): Promise<SyncResult> {
    const started = Date.now();
    // Without a builder (first sync, or after a failure) the sync is full whatever was asked.
    const full = req.full || !this.builder;
    // The endpoint changes this sync programs: read before compiling, forgotten on success.
    const endpointChanges = this.store.endpointChanges(full ? undefined : req.dirty);
    const attributes = {
      [Attr.syncType]: full ? 'full' : 'partial',
      [Attr.trigger]: [...req.reasons],
      [Attr.nodeName]: this.config.nodeName,
    };
    return tracer().startActiveSpan(Spans.sync, { attributes }, async (span) => {
      if (span.isRecording()) this.linkChanges(span, endpointChanges);
      try {
        const result = await this.run(req, full, endpointChanges, started);
        if (span.isRecording())
          span.setAttributes({
            [Attr.servicesTouched]: result.servicesSynced,
            [Attr.endpointsTouched]: this.endpointCount(result.services),
            [Attr.endpointChanges]: endpointChanges.length,
            [Attr.elementsAdded]: result.diff.elementsAdded,
            [Attr.elementsRemoved]: result.diff.elementsDeleted,
            [Attr.tablesReplaced]: result.diff.tablesReplaced,
            [Attr.chainsChanged]:
              result.diff.chainsAdded + result.diff.chainsDeleted + result.diff.chainsFlushed,
            [Attr.commands]: result.commands,
            [Attr.bytes]: result.bytes,
            [Attr.flowsCleared]: result.staleFlows,
          });
        return result;
      } catch (e) {
        recordFailure(span, e);
        throw e;
      } finally {
        span.end();
      }
    });
  }

  private async run(
    req: SyncRequest,
    full: boolean,
    endpointChanges: EndpointChange[],
    started: number,
  ): Promise<SyncResult> {
    // What others changed is put back first, from what the kernel holds now.
    const repaired =
      !full && req.repair?.size
        ? await inSpan(Spans.repair, {}, async (s) => {
            const r = await this.repair(req.repair!);
            s.setAttributes(diffAttributes(r.diff));
            return r;
          })
        : undefined;
    const outcome = full ? await this.full() : await this.partial(req.dirty);
    const { flows, services, affinityLost } = outcome;
    const diff = repaired ? joinDiffs(repaired.diff, outcome.diff) : outcome.diff;
    const bytes = outcome.bytes + (repaired?.bytes ?? 0);
    this.store.forgetEndpointChanges(endpointChanges);
    const conntrack = this.opts.conntrack;
    if (flows.length && conntrack)
      await inSpan(Spans.conntrack, { [Attr.flowsCleared]: flows.length }, () => conntrack.clear(flows));
    // Affinity entries can only go stale when an affinity address lost an endpoint.
    let staleAffinity = 0;
    const affinity = this.opts.affinity;
    const builder = this.builder;
    if (affinity && builder && builder.hasAffinity() && (full || affinityLost)) {
      staleAffinity = await inSpan(Spans.affinity, {}, async (s) => {
        const n = await affinity.clean(builder);
        s.setAttribute(Attr.affinityCleared, n);
        return n;
      });
    }
    const result: SyncResult = {
      full,
      diff: diff.stats,
      commands: diff.tx.commands.length,
      bytes,
      servicesSynced: services.length,
      services,
      endpointChanges,
      staleFlows: flows.length,
      durationMs: Date.now() - started,
    };
    this.log.info('synced', {
      full: result.full,
      reasons: [...req.reasons],
      services: result.servicesSynced,
      commands: result.commands,
      bytes,
      elementsAdded: diff.stats.elementsAdded,
      elementsDeleted: diff.stats.elementsDeleted,
      tablesReplaced: diff.stats.tablesReplaced,
      ...(diff.stats.setsRewritten ? { setsRewritten: diff.stats.setsRewritten } : {}),
      ...(diff.stats.replaceReasons.length ? { replaceReasons: diff.stats.replaceReasons } : {}),
      staleFlows: flows.length,
      ...(staleAffinity ? { staleAffinity } : {}),
      durationMs: result.durationMs,
    });
    return result;
  }

  /** Endpoints (slice entries) of these services, for the trace. */
  private endpointCount(services: string[]): number {
    let n = 0;
    for (const key of services) for (const s of this.store.slicesOf(key)) n += s.endpoints.length;
    return n;
  }

  /**
   * Links the sync's span to its endpoint changes. Nothing propagates a trace context from
   * the API server, so each change becomes a span of its own (from its trigger time to when
   * nftproxy received it); a retry links the same spans again.
   */
  private linkChanges(span: Span, changes: EndpointChange[]): void {
    const links: Link[] = [];
    for (const c of changes.slice(0, MAX_LINKS)) {
      let ctx = this.changeSpans.get(c);
      if (!ctx) {
        const s = tracer().startSpan(Spans.endpointChange, {
          root: true,
          startTime: Math.min(c.triggerTime ?? c.receivedAt, c.receivedAt),
          attributes: {
            [Attr.namespace]: c.service.split('/')[0]!,
            [Attr.service]: c.service,
            [Attr.endpointSlice]: c.slice,
            [Attr.triggerTime]: c.triggerTime !== undefined,
          },
        });
        s.end(c.receivedAt);
        ctx = s.spanContext();
        this.changeSpans.set(c, ctx);
      }
      links.push({ context: ctx });
    }
    span.addLinks(links);
    if (changes.length > MAX_LINKS) span.setAttribute(Attr.linksDropped, changes.length - MAX_LINKS);
  }

  /**
   * Whether our tables still look as we left them: each exists, with our chains, rules and
   * set declarations (elements are not read). A full sync repairs what differs.
   */
  async drifted(): Promise<boolean> {
    const builder = this.builder;
    if (!builder) return false;
    for (const tk of builder.tableKeys()) {
      const { family } = builder.skeleton(tk).table;
      const have = await this.nft.describeTable(family, TABLE);
      if (!have || !sameDescription(this.nft.describe(builder.skeleton(tk)), have)) return true;
    }
    return false;
  }

  /** Applies a transaction; a large one without the table watch listening. */
  private apply(tx: Diff['tx']): ReturnType<NftBackend['apply']> {
    const quiet = this.quiet;
    if (quiet && elementEntries(tx.commands) >= QUIET_FROM) return quiet(() => this.nft.apply(tx));
    return this.nft.apply(tx);
  }

  private contribution(key: string): ServiceContribution | undefined {
    const svc = this.store.service(key);
    if (!svc || !proxied(svc, this.config.serviceProxyName)) return undefined;
    const { policy } = this.store.policyOf(svc);
    const ctx = this.context ?? this.freshContext().context;
    return compileService(svc, this.store.slicesOf(key), { ...ctx, ...(policy ? { policy } : {}) });
  }

  /** The settings completed from the cluster, and the services' context. */
  private freshContext(): { config: ProxyConfig; context: Omit<ServiceContext, 'policy'> } {
    const state = { serviceCIDRs: this.store.serviceCIDRList(), nodes: this.store.nodeList() };
    const config = effectiveConfig(this.config, state);
    return { config, context: serviceContextOf(state, config) };
  }

  /** The store as a source of services for a whole compile. */
  private source(): ServiceSource {
    return { keys: () => this.store.serviceKeys(), contribution: (k) => this.contribution(k) };
  }

  private async full(): Promise<Outcome> {
    this.builder = undefined;
    const { config, count } = await inSpan(Spans.collect, {}, (s) => {
      const count = this.store.counts().services;
      s.setAttribute(Attr.servicesTouched, count);
      const fresh = this.freshContext();
      this.context = fresh.context;
      return { config: fresh.config, count };
    });
    const builder = await inSpan(Spans.compile, { [Attr.servicesTouched]: count }, () =>
      buildRuleset(config, [...(this.context!.nodeIPs ?? [])], this.source()),
    );
    for (const d of builder.diagnostics()) this.log.warn(formatDiagnostic(d));

    const stats = emptyStats();
    // The kernel is read one table, then one set at a time, and compared as it is read, so
    // no more than one set's elements are held at once.
    const planned = await inSpan(Spans.readKernel, {}, async (s) => {
      const out: Command[][] = [];
      let setsRead = 0;
      for (const tk of builder.tableKeys()) {
        const desired = builder.desired(tk);
        const kernel = await this.nft.describeTable(desired.skeleton.table.family, TABLE);
        if (!kernel) {
          out.push(createTable(desired, stats));
          continue;
        }
        const r = await this.planTable(tk, desired, kernel, stats);
        setsRead += r.setsRead;
        out.push(r.commands);
      }
      s.setAttribute(Attr.setsRead, setsRead);
      return out;
    });
    const diff: Diff = await inSpan(Spans.diff, {}, (s) => {
      const d: Diff = { tx: { commands: planned.flat() }, stats };
      s.setAttributes(diffAttributes(d));
      return d;
    });
    const commands = diff.tx.commands;
    const { bytes } = commands.length ? await this.apply(diff.tx) : { bytes: 0 };
    this.builder = builder;
    // What the kernel forwarded before is not known (large sets are rewritten, not read):
    // conntrack itself says which UDP and SCTP flows no longer fit.
    const conntrack = this.opts.conntrack;
    const flows = conntrack ? staleFlowsInTable(await conntrack.list(), builder.units()) : [];
    return {
      diff,
      bytes,
      flows,
      services: [...builder.serviceKeys()],
      affinityLost: true,
    };
  }

  /**
   * Plans one existing table: chains and sets from its description, then each set's
   * elements: read and compared one set at a time, or, for a set larger than the backend
   * reads cheaply, emptied and refilled in the same transaction.
   */
  private async planTable(
    tk: string,
    desired: DesiredTable,
    kernel: TableDescription,
    stats: DiffStats,
  ): Promise<{ commands: Command[]; setsRead: number }> {
    const { family } = desired.skeleton.table;
    const plan = new TablePlan(desired, kernel, this.nft, stats);
    if (plan.replaceReason) {
      stats.replaceReasons.push(`${tk}: ${plan.replaceReason}`);
      return { commands: createTable(desired, stats), setsRead: 0 };
    }
    let setsRead = 0;
    for (const set of plan.setsToCompare) {
      const count = kernel.sets.get(set)?.count;
      if (count !== undefined && count > this.nft.readLimit) {
        plan.rewriteSet(set, count);
        continue;
      }
      setsRead++;
      plan.compareSet(set, new Set((await this.nft.listElements(family, TABLE, set)) ?? []));
    }
    return { commands: plan.commands(), setsRead };
  }

  /**
   * Puts back what someone else changed in our tables, from the kernel's account of their
   * commits: elements they added or deleted, key by key, without reading the set; sets whose
   * elements it could not give as lines are compared whole; the chains, rules and set
   * declarations are compared (a few hundred objects). One transaction; the builder is not
   * touched, so a failure leaves everything as it was (the retry is a full sync).
   */
  private async repair(changes: Map<Family, TableChange>): Promise<{ diff: Diff; bytes: number }> {
    const builder = this.builder!;
    const stats = emptyStats();
    const commands: Command[] = [];
    for (const tk of builder.tableKeys()) {
      const desired = builder.desired(tk);
      const family = desired.skeleton.table.family;
      const change = changes.get(family);
      if (!change) continue;
      const kernel = await this.nft.describeTable(family, TABLE);
      if (!kernel) {
        commands.push(...createTable(desired, stats));
        continue;
      }
      const plan = new TablePlan(desired, kernel, this.nft, stats);
      if (plan.replaceReason) {
        stats.replaceReasons.push(`${tk}: ${plan.replaceReason}`);
        commands.push(...createTable(desired, stats));
        continue;
      }
      // Sets not here are new (the plan adds them whole), not ours, or filled by the kernel.
      const comparable = new Set(plan.setsToCompare);
      for (const [set, events] of change.elements) {
        if (!comparable.has(set)) continue;
        if (events !== 'unknown') {
          plan.restoreKeys(set, events);
          continue;
        }
        const count = kernel.sets.get(set)?.count;
        if (count !== undefined && count > this.nft.readLimit) plan.rewriteSet(set, count);
        else plan.compareSet(set, new Set((await this.nft.listElements(family, TABLE, set)) ?? []));
      }
      commands.push(...plan.commands());
    }
    const diff: Diff = { tx: { commands }, stats };
    const { bytes } = commands.length ? await this.apply(diff.tx) : { bytes: 0 };
    return { diff, bytes };
  }

  private async partial(dirty: Set<string>): Promise<Outcome> {
    const builder = this.builder!;
    try {
      const keys = await inSpan(Spans.collect, { [Attr.servicesTouched]: dirty.size }, () => [...dirty]);
      const delta = await inSpan(Spans.compile, { [Attr.servicesTouched]: keys.length }, () => {
        for (const key of keys) builder.setService(key, this.contribution(key));
        return builder.takeDelta();
      });
      for (const d of builder.diagnostics(dirty)) this.log.warn(formatDiagnostic(d));
      const diff = await inSpan(Spans.diff, {}, (s) => {
        const diff = deltaTransaction(delta, builder, this.nft);
        s.setAttributes(diffAttributes(diff));
        return diff;
      });
      const { bytes } = diff.tx.commands.length ? await this.apply(diff.tx) : { bytes: 0 };
      return {
        diff,
        flows: staleFlows(portChangesOfDelta(delta.entries.values())),
        services: keys,
        bytes,
        affinityLost: affinityLost(delta),
      };
    } catch (e) {
      // The builder moved on (perhaps halfway), the kernel did not: forget the builder; the
      // retry is a full sync from what the kernel holds.
      this.builder = undefined;
      throw e;
    }
  }
}

/** Two transactions of one sync as one. */
function joinDiffs(a: Diff, b: Diff): Diff {
  const stats = emptyStats();
  for (const k of Object.keys(stats) as (keyof DiffStats)[]) {
    if (k === 'replaceReasons') stats.replaceReasons = [...a.stats.replaceReasons, ...b.stats.replaceReasons];
    else stats[k] = a.stats[k] + b.stats[k];
  }
  return { tx: { commands: [...a.tx.commands, ...b.tx.commands] }, stats };
}

/** Whether an affinity address of the delta lost an endpoint. */
function affinityLost(delta: RulesetDelta): boolean {
  for (const { before, after } of delta.entries.values()) {
    if (before?.affinityTimeout === undefined) continue;
    if (!after) return true;
    const now = portStateOf(after).endpoints;
    for (const ep of portStateOf(before).endpoints) if (!now.has(ep)) return true;
  }
  return false;
}

/** Whether two descriptions have the same chains, rules and set declarations. */
export function sameDescription(a: TableDescription, b: TableDescription): boolean {
  if (a.chains.size !== b.chains.size || a.sets.size !== b.sets.size) return false;
  for (const [name, c] of a.chains) {
    const o = b.chains.get(name);
    if (
      !o ||
      o.def !== c.def ||
      o.rules.length !== c.rules.length ||
      o.rules.some((r, i) => r !== c.rules[i])
    )
      return false;
  }
  for (const [name, st] of a.sets) if (b.sets.get(name)?.def !== st.def) return false;
  return true;
}
