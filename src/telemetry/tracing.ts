/**
 * OpenTelemetry tracing: every sync is one trace (see docs/tracing.md). Configured by the
 * standard OTEL_* variables; when nothing asks for it, no provider is registered and the
 * API's no-op tracer makes every span call nearly free.
 */
import { createRequire } from 'node:module';
import { type Attributes, context, type Span, SpanStatusCode, trace, type Tracer } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  BasicTracerProvider,
  BatchSpanProcessor,
  ConsoleSpanExporter,
  SimpleSpanProcessor,
  type SpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from '@opentelemetry/semantic-conventions';
import { NftError } from '../nft/errors.js';

/**
 * nftproxy's version, as traces report it: that of the nearest package.json above this file
 * (two levels up from src/ and dist/, three from a benchmark build).
 */
export const VERSION: string = (() => {
  const require = createRequire(import.meta.url);
  for (const up of ['../../package.json', '../../../package.json']) {
    try {
      const pkg = require(up) as { name?: string; version?: string };
      if (pkg.name === 'nftproxy' && pkg.version) return pkg.version;
    } catch {
      // not there
    }
  }
  return 'unknown';
})();

/** Span names: one place, as the sync's stages. */
export const Spans = {
  sync: 'nftproxy.sync',
  collect: 'nftproxy.sync.collect',
  compile: 'nftproxy.sync.compile',
  readKernel: 'nftproxy.sync.read_kernel',
  repair: 'nftproxy.sync.repair',
  diff: 'nftproxy.sync.diff',
  render: 'nftproxy.nft.render',
  transaction: 'nftproxy.nft.transaction',
  conntrack: 'nftproxy.conntrack.cleanup',
  affinity: 'nftproxy.affinity.cleanup',
  endpointChange: 'nftproxy.endpointslice.change',
} as const;

/** The tracer every nftproxy span comes from. */
export function tracer(): Tracer {
  return trace.getTracer('nftproxy', VERSION);
}

/** Exporters tracing can use. */
export type ExporterName = 'otlp' | 'console';

/**
 * The exporters the environment asks for: OTEL_SDK_DISABLED=true turns everything off;
 * OTEL_TRACES_EXPORTER lists them (`otlp`, `console`, `none`); without it, OTLP when an OTLP
 * endpoint is set, else none. `console` adds the console exporter (the demo's flag).
 */
export function tracesExporters(env: NodeJS.ProcessEnv, opts: { console?: boolean } = {}): ExporterName[] {
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true') return [];
  const out = new Set<ExporterName>();
  const listed = env.OTEL_TRACES_EXPORTER?.split(',')
    .map((s) => s.trim().toLowerCase())
    .filter(Boolean);
  if (listed?.length) {
    for (const name of listed) {
      if (name === 'otlp' || name === 'console') out.add(name);
      else if (name !== 'none')
        throw new Error(`OTEL_TRACES_EXPORTER: unknown exporter ${JSON.stringify(name)}`);
    }
  } else if (env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) {
    out.add('otlp');
  }
  if (opts.console) out.add('console');
  return [...out];
}

/** Tracing as set up: on or off, and how to flush and stop it. */
export interface Tracing {
  exporters: ExporterName[];
  enabled: boolean;
  /** Exports what is buffered and unregisters the provider. */
  shutdown(): Promise<void>;
}

/** Options of `setupTracing`. */
export interface TracingOptions {
  /** The environment (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Also print spans on stdout (the demo). */
  console?: boolean;
  /** This node's name, a resource attribute. */
  nodeName?: string;
  /** Span processors to use instead of those the environment asks for (tests). */
  processors?: SpanProcessor[];
}

/**
 * Where OTLP/HTTP traces go by these variables, as the exporter reads them from process.env:
 * OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as is, else OTEL_EXPORTER_OTLP_ENDPOINT plus
 * `/v1/traces`; undefined leaves the exporter's default (http://localhost:4318/v1/traces).
 */
export function otlpTracesUrl(env: NodeJS.ProcessEnv): string | undefined {
  const traces = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT?.trim();
  if (traces) return traces;
  const base = env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim();
  return base ? `${base.replace(/\/+$/, '')}/v1/traces` : undefined;
}

/**
 * Registers a tracer provider and an async context manager when the environment (or the
 * options) ask for tracing; otherwise registers nothing. The OTLP/HTTP exporter reads its
 * endpoint, headers and timeout from the OTEL_EXPORTER_OTLP_* variables of process.env
 * itself; with an injected `env`, the endpoint is taken from it, so that the variables that
 * turned OTLP on also decide where spans go.
 */
export function setupTracing(opts: TracingOptions = {}): Tracing {
  const env = opts.env ?? process.env;
  const exporters = opts.processors ? [] : tracesExporters(env, opts);
  const url = env === process.env ? undefined : otlpTracesUrl(env);
  const processors: SpanProcessor[] = opts.processors ?? [
    ...(exporters.includes('otlp')
      ? [new BatchSpanProcessor(new OTLPTraceExporter(url ? { url } : {}))]
      : []),
    ...(exporters.includes('console') ? [new SimpleSpanProcessor(new ConsoleSpanExporter())] : []),
  ];
  if (processors.length === 0) return { exporters, enabled: false, shutdown: async () => {} };
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({
      [ATTR_SERVICE_NAME]: env.OTEL_SERVICE_NAME || 'nftproxy',
      [ATTR_SERVICE_VERSION]: VERSION,
      ...(opts.nodeName ? { [Attr.nodeName]: opts.nodeName } : {}),
    }),
    spanProcessors: processors,
  });
  const contextManager = new AsyncLocalStorageContextManager().enable();
  context.setGlobalContextManager(contextManager);
  trace.setGlobalTracerProvider(provider);
  return {
    exporters,
    enabled: true,
    shutdown: async () => {
      await provider.shutdown();
      trace.disable();
      context.disable();
    },
  };
}

/**
 * Attribute names: semantic conventions where they exist (`k8s.*`, `error.type`; written
 * out because the k8s ones are still in the incubating set), `nftproxy.*` otherwise.
 */
export const Attr = {
  nodeName: 'k8s.node.name',
  namespace: 'k8s.namespace.name',
  errorType: 'error.type',
  syncType: 'nftproxy.sync.type',
  trigger: 'nftproxy.sync.trigger',
  servicesTouched: 'nftproxy.services.touched',
  endpointsTouched: 'nftproxy.endpoints.touched',
  endpointChanges: 'nftproxy.endpoint_changes',
  linksDropped: 'nftproxy.endpoint_changes.unlinked',
  elementsAdded: 'nftproxy.elements.added',
  elementsRemoved: 'nftproxy.elements.removed',
  tablesReplaced: 'nftproxy.tables.replaced',
  chainsChanged: 'nftproxy.chains.changed',
  commands: 'nftproxy.nft.commands',
  bytes: 'nftproxy.nft.bytes',
  exitCode: 'nftproxy.nft.exit_code',
  flowsCleared: 'nftproxy.conntrack.flows_cleared',
  affinityCleared: 'nftproxy.affinity.entries_cleared',
  service: 'nftproxy.service',
  endpointSlice: 'nftproxy.endpointslice',
  triggerTime: 'nftproxy.trigger_time_present',
  setsRead: 'nftproxy.kernel.sets_read',
  backend: 'nftproxy.nft.backend',
} as const;

/** Marks a span failed with the error: status, `error.type`, the exception event. */
export function recordFailure(span: Span, e: unknown): void {
  if (!span.isRecording()) return;
  const err = e instanceof Error ? e : new Error(String(e));
  span.recordException(err);
  span.setStatus({ code: SpanStatusCode.ERROR, message: err.message.split('\n')[0]! });
  span.setAttribute(Attr.errorType, e instanceof NftError ? e.kind : err.name);
  if (e instanceof NftError && e.exitCode !== undefined) span.setAttribute(Attr.exitCode, e.exitCode);
}

/**
 * Runs `fn` in a child span of the active one; the span ends when `fn` settles and records
 * a failure if it throws.
 */
export async function inSpan<T>(
  name: string,
  attributes: Attributes,
  fn: (span: Span) => Promise<T> | T,
): Promise<T> {
  return tracer().startActiveSpan(name, { attributes }, async (span) => {
    try {
      return await fn(span);
    } catch (e) {
      recordFailure(span, e);
      throw e;
    } finally {
      span.end();
    }
  });
}
