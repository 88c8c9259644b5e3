/**
 * What `nftproxy run` starts: the source, the backend and the operator, and what stops them.
 * Loaded only when the command runs: it brings @kubernetes/client-node, prom-client and
 * OpenTelemetry, which the other commands do not need (docs/benchmarks.md, the CLI's start).
 */
import { ConntrackCleaner } from '../controller/conntrack.js';
import { Operator } from '../controller/operator.js';
import { PolicyStatusWriter } from '../controller/policy-status-writer.js';
import { ApiEventRecorder } from '../controller/events.js';
import { availableParallelism, networkInterfaces } from 'node:os';
import { applyConntrackSettings, sysctlAccess } from '../controller/sysctl.js';
import { nodeIPsOf } from '../proxy/compile.js';
import { healthCheckHosts, ServiceHealthServer } from '../controller/service-health.js';
import { type Settings } from '../controller/settings.js';
import { ApiSource, loadKubeConfig } from '../k8s/api-source.js';
import { ManifestSource } from '../k8s/manifest-source.js';
import type { ClusterSource } from '../k8s/source.js';
import type { NftBackend } from '../nft/backend.js';
import { ExecBackend } from '../nft/exec.js';
import { NetlinkBackend, probeNetlink } from '../nft/netlink/backend.js';
import { TableMonitor } from '../nft/netlink/monitor.js';
import { RulesetBuilder } from '../proxy/builder.js';
import { NftError, NftErrorKind } from '../nft/errors.js';
import { TABLE } from '../proxy/names.js';
import { ConfigError } from '../proxy/config.js';
import { jsonLogger, type Logger } from '../telemetry/log.js';
import { setupTracing, type Tracing } from '../telemetry/tracing.js';
import { inNetns } from './common.js';

/** The source the settings name: a manifest directory, or the API server with the settings' backoff and probing. */
export function sourceFor(settings: Settings, log: Logger): ClusterSource {
  if (settings.manifests) return new ManifestSource(settings.manifests, { log });
  return new ApiSource({
    nodeName: settings.proxy.nodeName,
    ...(settings.kubeconfig ? { kubeconfig: settings.kubeconfig } : {}),
    backoff: { initialMs: 1000, maxMs: settings.apiBackoffMaxMs },
    probeIntervalMs: settings.apiProbeIntervalMs,
    ...(settings.proxy.serviceProxyName ? { serviceProxyName: settings.proxy.serviceProxyName } : {}),
    log,
  });
}

/**
 * Runs the operator until SIGTERM or SIGINT. `traceConsole`: print each sync's spans; `ignored`:
 * what the config file set that nftproxy does not use, logged at start.
 */
export async function runOperator(
  settings: Settings,
  opts: { traceConsole?: boolean; ignored?: string[] } = {},
): Promise<void> {
  const log = jsonLogger(settings.logLevel);
  for (const i of opts.ignored ?? []) log.warn(`ignored: ${i}`);
  let tracing: Tracing;
  try {
    tracing = setupTracing({ console: opts.traceConsole ?? false, nodeName: settings.proxy.nodeName });
  } catch (e) {
    throw new ConfigError([e instanceof Error ? e.message : String(e)]);
  }
  // Policy status and Events go to the API server; with manifests, problems are only logged.
  // Loaded before anything opens: no API server to find is a message and exit 2.
  const kubeConfig = settings.manifests
    ? undefined
    : loadKubeConfig(settings.kubeconfig ? { kubeconfig: settings.kubeconfig } : {});
  const nft = await openBackend(settings);
  await applyConntrackSettings(settings.conntrack, sysctlAccess(settings.netns), availableParallelism(), log);
  log.info('starting', {
    node: settings.proxy.nodeName,
    backend: nft.backend.name,
    ...(nft.version ? { nft: nft.version } : {}),
    source: settings.manifests ? `manifests ${settings.manifests}` : 'kubernetes API',
    ...(settings.netns ? { netns: settings.netns } : {}),
  });
  // Health check node ports are served on the node; with --netns the rules live elsewhere,
  // so there is nothing meaningful to serve here.
  const serviceHealth = settings.netns
    ? undefined
    : new ServiceHealthServer({
        proxyHealthy: () => operator.healthy(),
        hosts: () =>
          healthCheckHosts(
            settings.proxy,
            nodeIPsOf({ nodes: operator.store.nodeList() }, settings.proxy),
            networkInterfaces(),
          ),
        log,
      });
  const events = kubeConfig && new ApiEventRecorder({ kubeConfig, nodeName: settings.proxy.nodeName, log });
  const policyStatus =
    kubeConfig &&
    events &&
    new PolicyStatusWriter({ kubeConfig, nodeName: settings.proxy.nodeName, log, events });
  const operator: Operator = new Operator({
    settings,
    source: sourceFor(settings, log),
    nft: nft.backend,
    conntrack: new ConntrackCleaner({ command: inNetns(settings, 'conntrack'), log }),
    log,
    ...(serviceHealth ? { serviceHealth } : {}),
    ...(policyStatus ? { policyStatus } : {}),
    ...(events ? { events } : {}),
    watchTables: (h) => {
      const backend = nft.backend;
      const m = new TableMonitor({
        ...(settings.netns ? { netns: settings.netns } : {}),
        table: TABLE,
        ours: (pid) => backend.ownsCommit?.(pid) ?? false,
        ...h,
      });
      m.start();
      return m;
    },
  });
  let stopping: Promise<void> | undefined;
  const done = new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      log.info('stopping', { signal });
      stopping ??= operator.stop().then(resolve);
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  if (tracing.enabled) log.info('tracing every sync', { exporters: tracing.exporters });
  try {
    await operator.start();
  } catch (e) {
    // A port taken, say: let go of what started, so the process exits with the message.
    await operator.stop().catch(() => undefined);
    nft.backend.close?.();
    await tracing.shutdown();
    throw e;
  }
  await done;
  nft.backend.close?.();
  await tracing.shutdown();
}

/**
 * The backend the settings ask for, checked: the kernel (and, for the nft backend, the nft
 * binary) must take everything nftproxy writes, or the operator does not start.
 */
async function openBackend(settings: Settings): Promise<{ backend: NftBackend; version?: string }> {
  if (settings.backend === 'netlink') {
    const backend = new NetlinkBackend(settings.netns ? { netns: settings.netns } : {});
    const skeletons = new RulesetBuilder(settings.proxy, []);
    const refused = await probeNetlink(
      backend,
      skeletons.tableKeys().map((tk) => skeletons.skeleton(tk)),
    );
    if (refused) {
      backend.close();
      throw new NftError(
        NftErrorKind.Unavailable,
        `the kernel refuses nftproxy's tables over netlink: ${refused} (try --backend nft to see what nft says)`,
      );
    }
    return { backend };
  }
  const backend = new ExecBackend({ command: inNetns(settings, 'nft') });
  const caps = await backend.probe();
  if (caps.missing.length) {
    throw new NftError(
      NftErrorKind.Unavailable,
      `nft ${caps.version} or the kernel lacks what nftproxy needs:\n  ${caps.missing.map((m) => `${m.feature}: ${m.error}`).join('\n  ')}`,
    );
  }
  return { backend, version: caps.version };
}
