/**
 * What the inspection commands read from the node itself: our tables as the kernel holds
 * them, and the node's local addresses (for the tracer's `fib daddr type local`).
 */
import { execa } from 'execa';
import { canonicalIP } from '../net/ip.js';
import { ExecBackend } from '../nft/exec.js';
import { emptyRuleset, type Ruleset, tableKey } from '../nft/ruleset.js';
import { inspectTable, type ServiceView } from '../proxy/inspect.js';
import { FAMILIES, TABLE } from '../proxy/names.js';
import { inNetns, UsageError } from './common.js';

/** Where to read: this network namespace, or the named one. */
export interface LiveFlags {
  netns?: string;
}

/** Our tables as the kernel holds them, those that exist (perhaps none). */
export async function listLiveRuleset(flags: LiveFlags): Promise<Ruleset> {
  const nft = new ExecBackend({ command: inNetns(flags, 'nft') });
  const r = emptyRuleset();
  for (const family of FAMILIES) {
    const t = await nft.listTable(family, TABLE);
    if (t) r.tables.set(tableKey(family, TABLE), t);
  }
  return r;
}

/** Our tables as the kernel holds them; throws a UsageError when there are none. */
export async function readLiveRuleset(flags: LiveFlags): Promise<Ruleset> {
  const r = await listLiveRuleset(flags);
  if (r.tables.size === 0) {
    const where = flags.netns ? `in network namespace ${flags.netns}` : 'here';
    throw new UsageError(`no ${TABLE} tables ${where}; is nftproxy running on this node?`);
  }
  return r;
}

/** The services a ruleset's tables dispatch, both families. */
export function servicesOf(r: Ruleset): ServiceView[] {
  return [...r.tables.values()].flatMap((t) => inspectTable(t));
}

/** The node's local addresses (`ip -j addr`), loopback included. */
export async function liveLocalAddresses(flags: LiveFlags): Promise<string[]> {
  const [file, ...args] = inNetns(flags, 'ip');
  const r = await execa(file!, [...args, '-j', 'addr', 'show']);
  const links = JSON.parse(r.stdout) as { addr_info?: { local?: string }[] }[];
  const out = new Set<string>();
  for (const l of links)
    for (const a of l.addr_info ?? []) {
      const ip = a.local && canonicalIP(a.local);
      if (ip) out.add(ip);
    }
  return [...out];
}
