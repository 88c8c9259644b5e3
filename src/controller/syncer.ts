/**
 * One sync: from the store and the last applied state to one nft transaction.
 *
 * Full: compile every service, read what the kernel holds now, diff, apply. At start this
 * adopts identical rules without a change (or replaces them in one transaction); after a
 * failure or when someone changed our tables, it repairs exactly what differs.
 * Partial: recompile the dirty services in the builder and apply its delta.
 * A failed transaction leaves the kernel unchanged; the syncer then forgets its builder, so
 * the next sync (the queue makes it full) starts from what the kernel really holds.
 */
import type { NftBackend } from '../nft/backend.js';
import { deltaTransaction, type Diff, diffRulesets } from '../nft/diff.js';
import { emptyRuleset, irEqual, type Ruleset, tableKey } from '../nft/ruleset.js';
import type { ClusterStore, EndpointChange } from '../k8s/store.js';
import { formatDiagnostic } from '../k8s/types.js';
import { RulesetBuilder } from '../proxy/builder.js';
import { nodeInfoOf, nodeIPsOf } from '../proxy/compile.js';
import type { ProxyConfig } from '../proxy/config.js';
import { BaseChains, FAMILIES, TABLE } from '../proxy/names.js';
import { compareServiceKeys, compileService, proxied, type ServiceContribution } from '../proxy/service.js';
import type { Attributes, Link, Span, SpanContext } from '@opentelemetry/api';
import { silentLogger, type Logger } from '../telemetry/log.js';
import { Attr, inSpan, recordFailure, Spans, tracer } from '../telemetry/tracing.js';
import {
  changesBetween,
  changesOfDelta,
  type ConntrackCleaner,
  type SetChange,
  staleFlows,
} from './conntrack.js';
import type { AffinityCleaner } from './affinity.js';
import type { SyncRequest } from './queue.js';

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

/** Keeps one node's nftables in step with the store. */
export class Syncer {
  private builder: RulesetBuilder | undefined;
  private readonly log: Logger;
  /** The span of each endpoint change linked so far, so a retry links the same one. */
  private readonly changeSpans = new WeakMap<EndpointChange, SpanContext>();

  constructor(
    private readonly store: ClusterStore,
    private readonly config: ProxyConfig,
    private readonly nft: NftBackend,
    private readonly opts: SyncerOptions = {},
  ) {
    this.log = opts.log ?? silentLogger;
  }

  /** The desired ruleset as last applied, if a sync succeeded since the last failure. */
  get applied(): Ruleset | undefined {
    return this.builder?.ruleset;
  }

  /** The builder behind the applied ruleset (entries, diagnostics, stats). */
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
    const { diff, changes, services, ruleset, bytes } = full
      ? await this.full()
      : await this.partial(req.dirty);
    this.store.forgetEndpointChanges(endpointChanges);
    const flows = staleFlows(changes, ruleset);
    const conntrack = this.opts.conntrack;
    if (flows.length && conntrack)
      await inSpan(Spans.conntrack, { [Attr.flowsCleared]: flows.length }, () => conntrack.clear(flows));
    // Affinity entries can only go stale when a backend or dispatch element went away.
    let staleAffinity = 0;
    const affinity = this.opts.affinity;
    const builder = this.builder;
    if (affinity && builder && (full || changes.some((c) => c.before !== undefined))) {
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
   * Whether our tables still look as we left them: each exists and its prerouting chain has
   * our rules. Cheap (one small chain per family), for frequent checks; a full sync repairs.
   */
  async drifted(): Promise<boolean> {
    const wanted = this.builder?.ruleset;
    if (!wanted) return false;
    for (const family of FAMILIES) {
      const want = wanted.tables.get(tableKey(family, TABLE))?.chains.get(BaseChains.natPrerouting);
      const have = await this.nft.listChain(family, TABLE, BaseChains.natPrerouting);
      if (!have || !irEqual(have.rules, want?.rules)) return true;
    }
    return false;
  }

  private contribution(key: string): ServiceContribution | undefined {
    const svc = this.store.service(key);
    if (!svc || !proxied(svc)) return undefined;
    const { policy } = this.store.policyOf(svc);
    return compileService(svc, this.store.slicesOf(key), {
      node: nodeInfoOf({ nodes: this.store.nodeList() }, this.config),
      ...(policy ? { policy } : {}),
    });
  }

  private async readKernel(): Promise<Ruleset> {
    const r = emptyRuleset();
    for (const family of FAMILIES) {
      const t = await this.nft.listTable(family, TABLE);
      if (t) r.tables.set(tableKey(family, TABLE), t);
    }
    return r;
  }

  private async full(): Promise<{
    diff: Diff;
    changes: SetChange[];
    services: string[];
    ruleset: Ruleset;
    bytes: number;
  }> {
    this.builder = undefined;
    const { keys, nodeIPs } = await inSpan(Spans.collect, {}, (s) => {
      const keys = [...this.store.serviceKeys()].sort(compareServiceKeys);
      s.setAttribute(Attr.servicesTouched, keys.length);
      return { keys, nodeIPs: nodeIPsOf({ nodes: this.store.nodeList() }, this.config) };
    });
    const builder = await inSpan(Spans.compile, { [Attr.servicesTouched]: keys.length }, () => {
      const builder = new RulesetBuilder(this.config, nodeIPs);
      builder.recording = false;
      for (const key of keys) builder.setService(key, this.contribution(key));
      builder.recording = true;
      builder.takeDelta();
      return builder;
    });
    for (const d of builder.diagnostics()) this.log.warn(formatDiagnostic(d));

    const kernel = await inSpan(Spans.readKernel, {}, () => this.readKernel());
    const diff = await inSpan(Spans.diff, {}, (s) => {
      const diff = diffRulesets(kernel, builder.ruleset);
      s.setAttributes(diffAttributes(diff));
      return diff;
    });
    const { bytes } = diff.tx.commands.length ? await this.nft.apply(diff.tx) : { bytes: 0 };
    this.builder = builder;
    return {
      diff,
      bytes,
      changes: changesBetween(kernel, builder.ruleset),
      services: keys,
      ruleset: builder.ruleset,
    };
  }

  private async partial(
    dirty: Set<string>,
  ): Promise<{ diff: Diff; changes: SetChange[]; services: string[]; ruleset: Ruleset; bytes: number }> {
    const builder = this.builder!;
    try {
      const keys = await inSpan(Spans.collect, { [Attr.servicesTouched]: dirty.size }, () => [...dirty]);
      const delta = await inSpan(Spans.compile, { [Attr.servicesTouched]: keys.length }, () => {
        for (const key of keys) builder.setService(key, this.contribution(key));
        return builder.takeDelta();
      });
      for (const d of builder.diagnostics(dirty)) this.log.warn(formatDiagnostic(d));
      const diff = await inSpan(Spans.diff, {}, (s) => {
        const diff = deltaTransaction(delta, builder.ruleset);
        s.setAttributes(diffAttributes(diff));
        return diff;
      });
      const { bytes } = diff.tx.commands.length ? await this.nft.apply(diff.tx) : { bytes: 0 };
      return {
        diff,
        changes: changesOfDelta(delta),
        services: keys,
        ruleset: builder.ruleset,
        bytes,
      };
    } catch (e) {
      // The builder moved on (perhaps halfway), the kernel did not: forget the builder; the
      // retry is a full sync from what the kernel holds.
      this.builder = undefined;
      throw e;
    }
  }
}
