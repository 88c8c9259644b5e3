/**
 * `nftproxy run`: the operator. `nftproxy cleanup`: remove our tables.
 */
import { Command } from 'commander';
import { loadSettingsFile, resolveSettings, type SettingsInput } from '../controller/settings.js';
import type { Command as NftCommand } from '../nft/ir.js';
import { ExecBackend } from '../nft/exec.js';
import { FAMILIES, TABLE } from '../proxy/names.js';
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
      // Loaded here: what the operator brings takes most of a second to load.
      const { runOperator } = await import('./operate.js');
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
