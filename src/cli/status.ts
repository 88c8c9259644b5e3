/**
 * `nftproxy status`: what the kernel dispatches now, like `ipvsadm -Ln --stats`: each service
 * address and NodePort, its scheduler, its endpoints with weight and share, and the new
 * connections each endpoint got. Reads the live tables only.
 */
import { Command } from 'commander';
import { formatHostPort } from '../net/ip.js';
import type { PoolView, ServiceView } from '../proxy/inspect.js';
import { UsageError } from './common.js';
import { readLiveRuleset, servicesOf } from './live.js';

const COLS = { addr: 34, weight: 8, share: 8 };

function poolLines(p: PoolView, indent: string): string[] {
  return p.endpoints.map((ep) => {
    const conns = ep.connections === undefined ? '-' : String(ep.connections);
    return (
      `${indent}-> ${formatHostPort(ep.address, ep.port).padEnd(COLS.addr - indent.length - 3)}` +
      `${String(ep.slots).padEnd(COLS.weight)}${`${(100 * ep.share).toFixed(1)}%`.padEnd(COLS.share)}${conns}`
    );
  });
}

/** The `ipvsadm -Ln`-like table of these services. */
export function formatStatus(views: ServiceView[]): string {
  const addresses = views.filter((v) => v.kind === 'service').length;
  const nodePorts = views.length - addresses;
  const endpoints = new Set(
    views.flatMap((v) => v.cluster?.endpoints.map((e) => formatHostPort(e.address, e.port)) ?? []),
  ).size;
  const lines = [
    `${addresses} service address ports, ${nodePorts} NodePorts, ${endpoints} endpoints`,
    `${'Prot Address:Port'.padEnd(COLS.addr)}Scheduler / flags`,
    `${'  -> Endpoint:Port'.padEnd(COLS.addr)}${'Weight'.padEnd(COLS.weight)}${'Share'.padEnd(COLS.share)}Conns`,
  ];
  for (const v of views) {
    const where =
      v.address === undefined
        ? `*:${v.port} (NodePort${v.family === 'ip6' ? ', IPv6' : ''})`
        : formatHostPort(v.address, v.port);
    const flags: string[] = [];
    if (v.state === 'reject') flags.push('reject: no endpoints');
    else if (v.state === 'drop') flags.push('drop: internalTrafficPolicy Local, no endpoint on this node');
    else if (v.cluster)
      flags.push(v.cluster.scheduler + (v.cluster.scheduler === 'maglev' ? ` (${v.cluster.slots})` : ''));
    if (v.affinitySeconds !== undefined) flags.push(`affinity ClientIP ${v.affinitySeconds}s`);
    if (v.local !== undefined) flags.push('externalTrafficPolicy Local');
    if (v.sourceRanges) flags.push('source allow list');
    lines.push(`${`${v.protocol.toUpperCase().padEnd(5)}${where}`.padEnd(COLS.addr)}${flags.join(', ')}`);
    if (v.cluster && v.state === 'endpoints') lines.push(...poolLines(v.cluster, '  '));
    if (v.local === 'drop') lines.push('  from outside the cluster: dropped, no endpoint on this node');
    else if (v.local) {
      lines.push(`  from outside the cluster: this node's endpoints, ${v.local.scheduler}`);
      lines.push(...poolLines(v.local, '    '));
    }
  }
  return lines.join('\n') + '\n';
}

/** The `status` command. */
export function statusCommand(): Command {
  return new Command('status')
    .description(
      'what the kernel dispatches now: service addresses, schedulers, endpoints with weight, share and connections (like ipvsadm -Ln)',
    )
    .option('--netns <name>', 'read the tables of this network namespace instead of the current one')
    .option('-o, --output <format>', 'text or json', 'text')
    .action(async (flags: { netns?: string; output: string }) => {
      if (!['text', 'json'].includes(flags.output))
        throw new UsageError(`--output: want text or json, got ${JSON.stringify(flags.output)}`);
      const views = servicesOf(await readLiveRuleset(flags));
      process.stdout.write(
        flags.output === 'json' ? JSON.stringify(views, null, 2) + '\n' : formatStatus(views),
      );
    });
}
