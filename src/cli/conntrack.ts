/**
 * `nftproxy conntrack [IP:PORT[/proto]]`: the connections the kernel tracks to services,
 * each with the endpoint DNAT chose for it. Answers "which pod got my connection?".
 */
import { Command } from 'commander';
import { type Flow, listFlows } from '../controller/conntrack.js';
import { canonicalIP, formatHostPort } from '../net/ip.js';
import type { ServiceView } from '../proxy/inspect.js';
import { inNetns, UsageError } from './common.js';
import { findView, parseTarget } from './explain.js';
import { liveLocalAddresses, readLiveRuleset, servicesOf } from './live.js';

/** A tracked connection to a service, and the endpoint it went to. */
export interface ServiceFlow {
  /** `10.96.0.10:80/tcp`, or `NodePort 30080/tcp`. */
  service: string;
  client: string;
  /** The endpoint, or undefined when the flow was not translated (no rule when it began). */
  endpoint?: string;
  protocol: string;
  state?: string;
  timeout: number;
  flags: string[];
}

const label = (v: ServiceView) =>
  `${v.address === undefined ? `NodePort ${v.port}` : formatHostPort(v.address, v.port)}/${v.protocol}`;

/** The flows to our services among these, with their endpoints. */
export function serviceFlows(flows: Flow[], views: ServiceView[], local: Set<string>): ServiceFlow[] {
  const out: ServiceFlow[] = [];
  for (const f of flows) {
    const dst = canonicalIP(f.original.dst);
    if (!dst || f.original.dport === undefined) continue;
    const v = findView(views, dst, f.original.dport, f.protocol, local);
    if (!v) continue;
    const replySrc = canonicalIP(f.reply.src) ?? f.reply.src;
    const translated = replySrc !== dst || f.reply.sport !== f.original.dport;
    out.push({
      service: label(v),
      client: formatHostPort(f.original.src, f.original.sport ?? 0),
      ...(translated ? { endpoint: formatHostPort(replySrc, f.reply.sport ?? 0) } : {}),
      protocol: f.protocol,
      ...(f.state ? { state: f.state } : {}),
      timeout: f.timeout,
      flags: f.flags,
    });
  }
  return out.sort((a, b) => a.service.localeCompare(b.service) || a.client.localeCompare(b.client));
}

/** A table of flows, then connections per endpoint. */
export function formatFlows(flows: ServiceFlow[]): string {
  const lines = [
    `${'SERVICE'.padEnd(28)}${'CLIENT'.padEnd(28)}${'ENDPOINT'.padEnd(28)}${'STATE'.padEnd(13)}EXPIRES`,
  ];
  for (const f of flows) {
    lines.push(
      `${f.service.padEnd(28)}${f.client.padEnd(28)}${(f.endpoint ?? '(not translated)').padEnd(28)}` +
        `${(f.state ?? (f.flags.includes('UNREPLIED') ? 'UNREPLIED' : '-')).padEnd(13)}${f.timeout}s`,
    );
  }
  const per = new Map<string, number>();
  for (const f of flows) {
    const k = `${f.service} -> ${f.endpoint ?? '(not translated)'}`;
    per.set(k, (per.get(k) ?? 0) + 1);
  }
  lines.push('', `${flows.length} connections`);
  for (const [k, n] of [...per].sort()) lines.push(`  ${k}: ${n}`);
  return lines.join('\n') + '\n';
}

/** The `conntrack` command. */
export function conntrackCommand(): Command {
  return new Command('conntrack')
    .description(
      'connections the kernel tracks to services, each with the endpoint it went to (which pod got my connection?)',
    )
    .argument('[service]', 'only this service address: IP:PORT[/tcp|udp|sctp]')
    .option('--netns <name>', 'in this network namespace instead of the current one')
    .option('-o, --output <format>', 'text or json', 'text')
    .action(async (service: string | undefined, flags: { netns?: string; output: string }) => {
      if (!['text', 'json'].includes(flags.output))
        throw new UsageError(`--output: want text or json, got ${JSON.stringify(flags.output)}`);
      const target = service === undefined ? undefined : parseTarget(service);
      const views = servicesOf(await readLiveRuleset(flags));
      const local = new Set(await liveLocalAddresses(flags));
      if (target && !findView(views, target.addr, target.port, target.protocol, local)) {
        throw new UsageError(`no service at ${service} in the live tables (see nftproxy status)`);
      }
      const raw = await listFlows(
        inNetns(flags, 'conntrack'),
        target
          ? {
              family: target.addr.includes(':') ? 'ipv6' : 'ipv4',
              protocol: target.protocol,
              origDst: target.addr,
              origDstPort: target.port,
            }
          : {},
      );
      const flows = serviceFlows(raw, views, local);
      process.stdout.write(
        flags.output === 'json' ? JSON.stringify(flows, null, 2) + '\n' : formatFlows(flows),
      );
    });
}
