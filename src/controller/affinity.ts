/**
 * Stale ClientIP affinity. The kernel remembers each client's endpoint in the `affinity` map
 * until the timeout; when that endpoint stops being a backend of the address, the entry would
 * keep sending the client to it. After a sync that removed backends, entries that point at an
 * endpoint no longer behind their address are deleted (the rest stay: clients keep their
 * endpoint, as Kubernetes promises).
 */
import type { NftBackend } from '../nft/backend.js';
import { NftError, NftErrorKind } from '../nft/errors.js';
import type { Family } from '../nft/ir.js';
import type { RulesetBuilder } from '../proxy/builder.js';
import { FAMILIES, Maps, TABLE } from '../proxy/names.js';
import { silentLogger, type Logger } from '../telemetry/log.js';

/**
 * The keys of entries (element lines of the affinity map: `client . address . proto . port :
 * endpoint . port`) that point at an endpoint their address no longer forwards to.
 */
export function staleAffinityKeys(lines: Iterable<string>, targets: Map<string, Set<string>>): string[] {
  const out: string[] = [];
  for (const line of lines) {
    const colon = line.indexOf(' : ');
    if (colon < 0) continue;
    const key = line.slice(0, colon);
    const [, addr, proto, port] = key.split(' . ');
    const [ip, epPort] = line.slice(colon + 3).split(' . ');
    const eps = targets.get(`${addr}|${proto}|${port}`) ?? targets.get(`*|${proto}|${port}`);
    if (!eps?.has(`${ip}|${epPort}`)) out.push(key);
  }
  return out;
}

/** Deletes stale affinity entries from the kernel. */
export class AffinityCleaner {
  constructor(
    private readonly nft: NftBackend,
    private readonly log: Logger = silentLogger,
  ) {}

  /** Returns how many entries it deleted. Never throws: a failure only delays the cleanup. */
  async clean(builder: RulesetBuilder): Promise<number> {
    const targets = builder.affinityTargets();
    let deleted = 0;
    for (const family of FAMILIES) {
      // An entry can expire between listing and deleting, and one missing element fails the
      // whole transaction: list again and retry once.
      for (let attempt = 0; attempt < 2; attempt++) {
        try {
          deleted += await this.cleanFamily(family, targets.get(family) ?? new Map());
          break;
        } catch (e) {
          if (attempt === 0 && e instanceof NftError && e.kind === NftErrorKind.NotFound) continue;
          this.log.warn('could not delete stale affinity entries', { family, error: String(e) });
          break;
        }
      }
    }
    return deleted;
  }

  private async cleanFamily(family: Family, targets: Map<string, Set<string>>): Promise<number> {
    const lines = await this.nft.listElements(family, TABLE, Maps.affinity);
    if (!lines?.length) return 0;
    const stale = staleAffinityKeys(lines, targets);
    if (!stale.length) return 0;
    await this.nft.apply({
      commands: [{ delete: { element: { family, table: TABLE, name: Maps.affinity, lines: stale } } }],
    });
    return stale.length;
  }
}
