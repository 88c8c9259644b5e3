/**
 * `nftproxy run`: the operator. `nftproxy cleanup`: remove our tables.
 */
import { Command } from 'commander';
import { ConntrackCleaner } from '../controller/conntrack.js';
import { Operator } from '../controller/operator.js';
import { PolicyStatusWriter } from '../controller/policy-status-writer.js';
import { ApiEventRecorder } from '../controller/events.js';
import { availableParallelism, networkInterfaces } from 'node:os';
import { applyConntrackSettings, sysctlAccess } from '../controller/sysctl.js';
import { nodeIPsOf } from '../proxy/compile.js';
import { healthCheckHosts, ServiceHealthServer } from '../controller/service-health.js';
import {
  loadSettingsFile,
  resolveSettings,
  type Settings,
  type SettingsInput,
} from '../controller/settings.js';
import { ApiSource, loadKubeConfig } from '../k8s/api-source.js';
import { ManifestSource } from '../k8s/manifest-source.js';
import type { ClusterSource } from '../k8s/source.js';
import type { Command as NftCommand } from '../nft/ir.js';
import type { NftBackend } from '../nft/backend.js';
import { ExecBackend } from '../nft/exec.js';
import { NetlinkBackend, probeNetlink } from '../nft/netlink/backend.js';
import { TableMonitor } from '../nft/netlink/monitor.js';
import { RulesetBuilder } from '../proxy/builder.js';
import { NftError, NftErrorKind } from '../nft/errors.js';
import { FAMILIES, TABLE } from '../proxy/names.js';
import { ConfigError } from '../proxy/config.js';
import { jsonLogger, type Logger } from '../telemetry/log.js';
import { setupTracing, type Tracing } from '../telemetry/tracing.js';
import { collect, inNetns } from './common.js';

interface RunFlags {
  config?: string;
  manifests?: string;
  kubeconfig?: string;
  node?: string;
  clusterCidr?: string[];
  serviceCidr?: string[];
  serviceProxyName?: string;
  detectLocalMode?: string;
  podBridgeInterface?: string;
  podInterfaceNamePrefix?: string;
  nodeportAddresses?: string[];
  nodeIp?: string[];
  masqueradeAll?: boolean;
  syncPeriod?: string;
  fullSyncPeriod?: string;
  minSyncInterval?: string;
  apiBackoffMax?: string;
  apiProbeInterval?: string;
  healthzBindAddress?: string;
  metricsBindAddress?: string;
  netns?: string;
  backend?: string;
  logLevel?: string;
  traceConsole?: boolean;
  endpointMetrics?: string;
  conntrackMaxPerCore?: string;
  conntrackMin?: string;
  conntrackTcpTimeoutEstablished?: string;
  conntrackTcpTimeoutCloseWait?: string;
  conntrackTcpBeLiberal?: boolean;
  conntrackUdpTimeout?: string;
  conntrackUdpTimeoutStream?: string;
}

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

/** The `run` command. */
export function runCommand(): Command {
  return new Command('run')
    .description(
      "keep this node's nftables in step with the cluster (the operator); stops on SIGTERM, leaving the rules in place",
    )
    .option('--config <file>', 'YAML config file (flags override it)')
    .option(
      '--manifests <dir>',
      'read the cluster from this directory of manifests, watched, instead of the API server',
    )
    .option('--kubeconfig <file>', 'kubeconfig for the API server (default: in-cluster config)')
    .option('--node <name>', "this node's name (default: $NODE_NAME)")
    .option('--cluster-cidr <cidr>', 'pod network CIDR, repeatable', collect)
    .option(
      '--service-cidr <cidr>',
      'ClusterIP range, repeatable (one per family); traffic to an unallocated ClusterIP is dropped. ServiceCIDR objects add to it',
      collect,
    )
    .option(
      '--nodeport-addresses <cidr|primary>',
      'answer NodePorts only on local addresses in these CIDRs, repeatable',
      collect,
    )
    .option('--node-ip <ip>', "this node's IP, repeatable (default: from its Node object)", collect)
    .option('--masquerade-all', 'masquerade all traffic to ClusterIPs')
    .option(
      '--detect-local-mode <mode>',
      "how pods are told apart: ClusterCIDR (source in --cluster-cidr, the default), NodeCIDR (source in this Node's podCIDRs), BridgeInterface or InterfaceNamePrefix (the interface they arrive on)",
    )
    .option(
      '--pod-bridge-interface <name>',
      'with --detect-local-mode BridgeInterface: the bridge pods are on (cbr0)',
    )
    .option(
      '--pod-interface-name-prefix <prefix>',
      "with --detect-local-mode InterfaceNamePrefix: the prefix of the node's pod interfaces (veth, cali)",
    )
    .option(
      '--service-proxy-name <name>',
      'program only Services labelled service.kubernetes.io/service-proxy-name=NAME (default: only those without the label)',
    )
    .option('--sync-period <duration>', 'how often to check that our tables are intact (default 30s)')
    .option('--full-sync-period <duration>', 'how often to recompile everything and reconcile (default 1h)')
    .option('--min-sync-interval <duration>', 'minimum time between two syncs (default 100ms)')
    .option(
      '--api-backoff-max <duration>',
      'longest wait before a failed list or watch of the API server is retried (default 30s)',
    )
    .option(
      '--api-probe-interval <duration>',
      'while a watch waits after a failure, ask /readyz this often and reconnect once the API server is back (default 1s; 0 never asks)',
    )
    .option(
      '--healthz-bind-address <host:port>',
      '/healthz and /livez (default 0.0.0.0:10256; empty disables)',
    )
    .option('--metrics-bind-address <host:port>', '/metrics (default 127.0.0.1:10249; empty disables)')
    .option('--netns <name>', 'program this network namespace instead of the current one (tests, demos)')
    .option(
      '--backend <netlink|nft>',
      'how to write to the kernel: nf_tables netlink from nftproxy itself, or the nft binary (default netlink)',
    )
    .option('--log-level <level>', 'debug, info, warn or error (default info)')
    .option(
      '--endpoint-metrics <series>',
      'export the connection counter of each service endpoint on /metrics, at most this many series (default 0: none)',
    )
    .option(
      '--conntrack-max-per-core <n>',
      "raise nf_conntrack_max to CPUs x n (at least --conntrack-min) at start (kube-proxy's 32768; default: leave it)",
    )
    .option('--conntrack-min <n>', 'the floor of nf_conntrack_max with --conntrack-max-per-core')
    .option(
      '--conntrack-tcp-timeout-established <duration>',
      "idle established TCP flows (kube-proxy's 24h; default: leave it)",
    )
    .option(
      '--conntrack-tcp-timeout-close-wait <duration>',
      "TCP flows in CLOSE_WAIT (kube-proxy's 1h; default: leave it)",
    )
    .option('--conntrack-tcp-be-liberal', 'accept out-of-window TCP packets (nf_conntrack_tcp_be_liberal)')
    .option('--conntrack-udp-timeout <duration>', 'unreplied UDP flows (default: leave it)')
    .option('--conntrack-udp-timeout-stream <duration>', 'UDP flows with replies (default: leave it)')
    .option(
      '--trace-console',
      'print every sync as OpenTelemetry spans on stdout (OTLP export is set with the OTEL_* variables)',
    )
    .action(async (f: RunFlags) => {
      const flags: SettingsInput = {
        ...(f.node !== undefined ? { nodeName: f.node } : {}),
        ...(f.clusterCidr ? { clusterCIDRs: f.clusterCidr } : {}),
        ...(f.serviceCidr ? { serviceCIDRs: f.serviceCidr } : {}),
        ...(f.serviceProxyName !== undefined ? { serviceProxyName: f.serviceProxyName } : {}),
        ...(f.detectLocalMode !== undefined ? { detectLocalMode: f.detectLocalMode } : {}),
        ...(f.podBridgeInterface !== undefined ? { podBridgeInterface: f.podBridgeInterface } : {}),
        ...(f.podInterfaceNamePrefix !== undefined
          ? { podInterfaceNamePrefix: f.podInterfaceNamePrefix }
          : {}),
        ...(f.nodeportAddresses ? { nodePortAddresses: f.nodeportAddresses } : {}),
        ...(f.nodeIp ? { nodeIPs: f.nodeIp } : {}),
        ...(f.masqueradeAll ? { masqueradeAll: true } : {}),
        ...(f.manifests !== undefined ? { manifests: f.manifests } : {}),
        ...(f.kubeconfig !== undefined ? { kubeconfig: f.kubeconfig } : {}),
        ...(f.netns !== undefined ? { netns: f.netns } : {}),
        ...(f.backend !== undefined ? { backend: f.backend } : {}),
        ...(f.syncPeriod !== undefined ? { syncPeriod: f.syncPeriod } : {}),
        ...(f.fullSyncPeriod !== undefined ? { fullSyncPeriod: f.fullSyncPeriod } : {}),
        ...(f.minSyncInterval !== undefined ? { minSyncInterval: f.minSyncInterval } : {}),
        ...(f.apiBackoffMax !== undefined ? { apiBackoffMax: f.apiBackoffMax } : {}),
        ...(f.apiProbeInterval !== undefined ? { apiProbeInterval: f.apiProbeInterval } : {}),
        ...(f.healthzBindAddress !== undefined ? { healthzBindAddress: f.healthzBindAddress } : {}),
        ...(f.metricsBindAddress !== undefined ? { metricsBindAddress: f.metricsBindAddress } : {}),
        ...(f.logLevel !== undefined ? { logLevel: f.logLevel } : {}),
        ...(f.endpointMetrics !== undefined ? { endpointMetrics: Number(f.endpointMetrics) } : {}),
        ...(f.conntrackMaxPerCore !== undefined
          ? { conntrackMaxPerCore: Number(f.conntrackMaxPerCore) }
          : {}),
        ...(f.conntrackMin !== undefined ? { conntrackMin: Number(f.conntrackMin) } : {}),
        ...(f.conntrackTcpTimeoutEstablished !== undefined
          ? { conntrackTCPEstablishedTimeout: f.conntrackTcpTimeoutEstablished }
          : {}),
        ...(f.conntrackTcpTimeoutCloseWait !== undefined
          ? { conntrackTCPCloseWaitTimeout: f.conntrackTcpTimeoutCloseWait }
          : {}),
        ...(f.conntrackTcpBeLiberal ? { conntrackTCPBeLiberal: true } : {}),
        ...(f.conntrackUdpTimeout !== undefined ? { conntrackUDPTimeout: f.conntrackUdpTimeout } : {}),
        ...(f.conntrackUdpTimeoutStream !== undefined
          ? { conntrackUDPStreamTimeout: f.conntrackUdpTimeoutStream }
          : {}),
      };
      const file = f.config ? await loadSettingsFile(f.config) : { settings: {}, ignored: [] };
      await runOperator(resolveSettings(flags, file.settings), {
        traceConsole: f.traceConsole ?? false,
        ignored: file.ignored,
      });
    });
}

/** The `cleanup` command. */
export function cleanupCommand(): Command {
  return new Command('cleanup')
    .description('delete the nftproxy tables (ip and ip6); connections already established keep their NAT')
    .option('--netns <name>', 'in this network namespace instead of the current one')
    .action(async (f: { netns?: string }) => {
      const nft = new ExecBackend({ command: inNetns(f, 'nft') });
      const commands: NftCommand[] = FAMILIES.flatMap((family) => [
        { add: { table: { family, name: TABLE } } },
        { delete: { table: { family, name: TABLE } } },
      ]);
      await nft.apply({ commands });
      process.stdout.write(`deleted tables ${FAMILIES.map((f) => `${f} ${TABLE}`).join(' and ')}\n`);
    });
}
