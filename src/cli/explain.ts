/**
 * `nftproxy explain`: where does a packet go? Runs the tracer on the live tables as the
 * kernel holds them, or on the ruleset compiled from manifests, and prints the endpoints it
 * can reach, masquerading, or why it is refused.
 */
import { Command } from 'commander';
import type { Scheduler } from '../api/types.js';
import { canonicalIP, type CIDR, cidrContains, formatHostPort, parseCIDR, parseIP } from '../net/ip.js';
import { tableKey, type Ruleset } from '../nft/ruleset.js';
import { compile, type DispatchEntry, localAddresses } from '../proxy/compile.js';
import type { ServiceView } from '../proxy/inspect.js';
import { Chains, Maps, Sets, TABLE } from '../proxy/names.js';
import {
  type Entry,
  type TraceOutcome,
  type TraceProtocol,
  Tracer,
  type TraceResult,
} from '../nft/tracer.js';
import { loadCluster, type NodeFlags, nodeOptions, printDiagnostics, UsageError } from './common.js';
import { liveLocalAddresses, readLiveRuleset, servicesOf } from './live.js';

/** `10.0.0.1:80/tcp`, `[fd00::1]:53/udp`; protocol defaults to tcp. */
export function parseTarget(text: string): { addr: string; port: number; protocol: TraceProtocol } {
  const m = /^(?:\[([^\]]+)\]|([^:/]+)):(\d+)(?:\/(tcp|udp|sctp))?$/i.exec(text);
  const addr = m && canonicalIP(m[1] ?? m[2]!);
  const port = m ? Number(m[3]) : NaN;
  if (!m || !addr || port < 1 || port > 65535) {
    throw new UsageError(
      `--to: want IP:PORT[/tcp|udp|sctp] (IPv6 as [IP]:PORT), got ${JSON.stringify(text)}`,
    );
  }
  return { addr, port, protocol: (m[4]?.toLowerCase() ?? 'tcp') as TraceProtocol };
}

const ENTRY_TEXT: Record<Entry, string> = {
  pod: 'from a pod on this node (prerouting)',
  external: 'from outside the node (prerouting)',
  host: 'from a process on the node itself (output)',
};

function endpointOf(o: TraceOutcome): string {
  return formatHostPort(o.dnat!.addr, o.dnat!.port);
}

/** Whether a rule of the path acted through one of these sets or maps. */
const through = (o: TraceOutcome, ...sets: string[]) =>
  o.steps.some((s) => s.kind === 'rule' && s.sets.some((x) => sets.includes(x)));
/** Whether a rule of this chain acted on the packet. */
const inChain = (o: TraceOutcome, chain: string) =>
  o.steps.some((s) => s.kind === 'rule' && s.chain === chain);

/** Why a packet was refused, from the chains and maps on its path. */
function rejectReason(o: TraceOutcome): string {
  if (through(o, Maps.noEndpointServices, Maps.noEndpointNodeports))
    return 'the service port has no usable endpoints';
  if (inChain(o, Chains.clusterIPsCheck)) return 'this ClusterIP has no such port';
  return 'refused by the ruleset';
}

/** How each scheduler picks, in words. */
const HOW: Record<Scheduler, string> = {
  random: 'chosen at random',
  weighted: 'chosen at random by weight',
  roundRobin: 'in turn',
  sourceHash: 'by a hash of the client address',
  maglev: 'by Maglev consistent hashing of the client address',
};

/** Why a packet was dropped, from the chains and maps on its path. */
function dropReason(o: TraceOutcome): string {
  if (inChain(o, Chains.firewall)) return 'the source address is not allowed (source ranges)';
  if (through(o, Maps.localServiceIPs, Maps.localServiceNodeports))
    return 'externalTrafficPolicy Local and no endpoint on this node';
  if (through(o, Maps.noEndpointServices)) return 'internalTrafficPolicy Local and no endpoint on this node';
  return 'dropped by the ruleset';
}

/** The service port a packet is addressed to, if any. */
export function findEntry(
  entries: DispatchEntry[],
  addr: string,
  port: number,
  protocol: string,
  local: Set<string>,
): DispatchEntry | undefined {
  return (
    entries.find((e) => e.address === addr && e.port === port && e.protocol === protocol) ??
    (local.has(addr)
      ? entries.find(
          (e) =>
            e.kind === 'nodePort' &&
            e.port === port &&
            e.protocol === protocol &&
            e.family === (addr.includes(':') ? 'ip6' : 'ip'),
        )
      : undefined)
  );
}

/** The service port a traced packet belongs to, as the report names it. */
export interface Owner {
  /** `default/web port "http" (clusterIP)`, or the address when names are unknown. */
  service: string;
  scheduler: Scheduler;
  /** Scheduler, policy, affinity and the like, in words. */
  details: string[];
}

/** The owner as the compiler knows it (manifests): with names and policy. */
export function ownerOfEntry(entry: DispatchEntry): Owner {
  const port = entry.portName ? ` port ${JSON.stringify(entry.portName)}` : '';
  const details: string[] = [`scheduler ${entry.scheduler}`];
  if (entry.policy) details.push(`ProxyPolicy ${entry.policy}`);
  if (entry.affinityTimeout) details.push(`ClientIP affinity ${entry.affinityTimeout}s`);
  if (entry.topology !== 'none') details.push(`topology hints for this ${entry.topology}`);
  if (entry.localEndpoints !== undefined) details.push('externalTrafficPolicy Local');
  return { service: `${entry.service}${port} (${entry.kind})`, scheduler: entry.scheduler, details };
}

/** The owner as the live table knows it: addresses only, the kernel keeps no names. */
export function ownerOfView(v: ServiceView): Owner {
  const where = v.address === undefined ? `NodePort ${v.port}` : formatHostPort(v.address, v.port);
  const scheduler = v.cluster?.scheduler ?? 'random';
  const details: string[] = [`scheduler ${scheduler}`];
  if (v.affinitySeconds) details.push(`ClientIP affinity ${v.affinitySeconds}s`);
  if (v.local) details.push('externalTrafficPolicy Local');
  if (v.sourceRanges) details.push('source allow list');
  return { service: `${where}/${v.protocol} (live table)`, scheduler, details };
}

/** Human-readable report of a trace. */
export function formatTrace(result: TraceResult, owner: Owner | undefined, verbose: boolean): string {
  const p = result.packet;
  const lines: string[] = [];
  const dst = formatHostPort(p.daddr, p.dport);
  const iif = p.iifname ? ` on ${p.iifname}` : '';
  lines.push(`packet   ${p.saddr} -> ${dst}/${p.protocol}, ${ENTRY_TEXT[p.entry]}${iif}`);
  if (owner) {
    lines.push(`service  ${owner.service}`);
    lines.push(`policy   ${owner.details.join(', ')}`);
  } else {
    lines.push('service  none: no service owns this address and port');
  }
  const accepted = result.outcomes.filter((o) => o.verdict === 'accept' && o.dnat);
  const first = result.outcomes[0];
  if (accepted.length) {
    const n = result.endpoints.length;
    const how = HOW[owner?.scheduler ?? 'random'];
    lines.push(`verdict  DNAT to ${n === 1 ? 'its only endpoint' : `one of ${n} endpoints, ${how}`}`);
    for (const ep of result.endpoints) {
      const os = accepted.filter((o) => endpointOf(o) === ep);
      // Each outcome is one slot of the pick: the share of slots is the share of connections.
      const share = n > 1 ? ` ${((100 * os.length) / accepted.length).toFixed(1).padStart(5)}%` : '';
      const masq = os.every((o) => o.masquerade)
        ? 'masqueraded (source becomes the node)'
        : os.some((o) => o.masquerade)
          ? 'sometimes masqueraded'
          : 'source address kept';
      const hairpin = os.some((o) => o.dnat!.addr === p.saddr) ? ', hairpin' : '';
      lines.push(`           ${ep.padEnd(28)}${share} ${masq}${hairpin}`);
    }
  } else if (first?.verdict === 'reject') {
    lines.push(`verdict  REJECT with ${first.reject}: ${rejectReason(first)}`);
  } else if (first?.verdict === 'drop') {
    lines.push(`verdict  DROP: ${dropReason(first)}`);
  } else {
    lines.push(
      `verdict  not translated; ${first?.delivery === 'local' ? 'delivered to the node itself' : 'routed on unchanged'}`,
    );
  }
  const shown = verbose ? result.outcomes : result.outcomes.slice(0, 1);
  for (const o of shown) {
    lines.push(`path${o.dnat ? ` to ${endpointOf(o)}` : ''}:`);
    for (const step of o.path) lines.push(`  ${step}`);
  }
  return lines.join('\n') + '\n';
}

/** The service view a packet to this address and port belongs to, in the live table. */
export function findView(
  views: ServiceView[],
  addr: string,
  port: number,
  protocol: string,
  local: Set<string>,
): ServiceView | undefined {
  const family = addr.includes(':') ? 'ip6' : 'ip';
  return (
    views.find((v) => v.address === addr && v.port === port && v.protocol === protocol) ??
    (local.has(addr)
      ? views.find(
          (v) => v.kind === 'nodeport' && v.family === family && v.port === port && v.protocol === protocol,
        )
      : undefined)
  );
}

/** The pod network as the live table records it (its `cluster-cidrs` set). */
function liveClusterCIDRs(r: Ruleset): CIDR[] {
  const out: CIDR[] = [];
  for (const family of ['ip', 'ip6'] as const) {
    const set = r.tables.get(tableKey(family, TABLE))?.sets.get(Sets.clusterCIDRs);
    for (const e of set?.elems.values() ?? []) {
      const p = typeof e === 'object' && e && 'prefix' in e ? e.prefix : undefined;
      const c = p
        ? parseCIDR(`${p.addr}/${p.len}`)
        : typeof e === 'string'
          ? parseCIDR(`${e}/${e.includes(':') ? 128 : 32}`)
          : undefined;
      if (c) out.push(c);
    }
  }
  return out;
}

type ExplainFlags = Partial<NodeFlags> & {
  from: string;
  to: string;
  entry?: string;
  iif?: string;
  verbose: boolean;
  output: string;
  netns?: string;
};

/** The `explain` command. */
export function explainCommand(): Command {
  return nodeOptions(new Command('explain'), { manifests: 'optional' })
    .description(
      'trace a new connection through the live tables (or, with --manifests, the ruleset they compile to): which endpoints it reaches, masquerade, or why it is refused',
    )
    .requiredOption('--from <ip>', 'source address of the packet')
    .requiredOption('--to <ip:port[/proto]>', 'destination, e.g. 10.96.0.10:80/tcp or [fd00::10]:53/udp')
    .option(
      '--entry <pod|external|host>',
      'where the packet enters (default: host if --from is a node address, pod if it is in a cluster CIDR, else external)',
    )
    .option(
      '--iif <interface>',
      'the interface the packet arrives on (what detectLocalMode BridgeInterface and InterfaceNamePrefix look at)',
    )
    .option('--netns <name>', 'without --manifests: read the tables of this network namespace')
    .option('-v, --verbose', 'show the path to every endpoint, not only the first', false)
    .option('-o, --output <format>', 'text or json', 'text')
    .action(async (flags: ExplainFlags) => {
      const to = parseTarget(flags.to);
      const from = canonicalIP(flags.from);
      if (!from) throw new UsageError(`--from: not an IP address: ${JSON.stringify(flags.from)}`);
      if (from.includes(':') !== to.addr.includes(':'))
        throw new UsageError('--from and --to must be of the same IP version');
      if (flags.entry !== undefined && !['pod', 'external', 'host'].includes(flags.entry)) {
        throw new UsageError(`--entry: want pod, external or host, got ${JSON.stringify(flags.entry)}`);
      }
      if (flags.manifests !== undefined && flags.netns !== undefined)
        throw new UsageError('--netns reads the live tables; --manifests compiles instead: choose one');
      const nodeFlags =
        flags.node !== undefined ||
        flags.masqueradeAll ||
        flags.detectLocalMode !== undefined ||
        [flags.clusterCidr, flags.nodeportAddresses, flags.nodeIp].some((l) => l?.length);
      if (flags.manifests === undefined && nodeFlags)
        throw new UsageError(
          'the node flags describe what --manifests compiles to; the live tables need none',
        );

      let ruleset: Ruleset;
      let local: string[];
      let clusterCIDRs: CIDR[];
      let owner: Owner | undefined;
      let ownerJson: unknown;
      if (flags.manifests !== undefined) {
        const { state, config, diagnostics } = await loadCluster(flags as NodeFlags);
        const result = compile(state, config);
        printDiagnostics([...diagnostics, ...result.diagnostics]);
        ruleset = result.ruleset;
        local = localAddresses(state, config);
        clusterCIDRs = config.clusterCIDRs;
        const entry = findEntry(result.entries, to.addr, to.port, to.protocol, new Set(local));
        owner = entry && ownerOfEntry(entry);
        ownerJson = entry;
      } else {
        ruleset = await readLiveRuleset(flags);
        local = await liveLocalAddresses(flags);
        clusterCIDRs = liveClusterCIDRs(ruleset);
        const view = findView(servicesOf(ruleset), to.addr, to.port, to.protocol, new Set(local));
        owner = view && ownerOfView(view);
        ownerJson = view;
      }
      const fromIP = parseIP(from)!;
      const entry: Entry =
        (flags.entry as Entry | undefined) ??
        (local.includes(from)
          ? 'host'
          : clusterCIDRs.some((c) => cidrContains(c, fromIP))
            ? 'pod'
            : 'external');
      const trace = new Tracer(ruleset, { localAddresses: local }).trace({
        saddr: from,
        daddr: to.addr,
        protocol: to.protocol,
        dport: to.port,
        entry,
        ...(flags.iif !== undefined ? { iifname: flags.iif } : {}),
      });
      if (flags.output === 'json')
        process.stdout.write(JSON.stringify({ ...trace, service: ownerJson ?? null }, null, 2) + '\n');
      else process.stdout.write(formatTrace(trace, owner, flags.verbose));
    });
}
