/**
 * Stale ClientIP affinity. The kernel remembers each client's endpoint in the `affinity` map
 * until the timeout; when that endpoint stops being a backend of the address, the entry would
 * keep sending the client to it. After a sync that removed backends, entries that point at an
 * endpoint no longer behind their address are deleted (the rest stay: clients keep their
 * endpoint, as Kubernetes promises).
 */
import type { NftBackend } from '../nft/backend.js';
import { NftError, NftErrorKind } from '../nft/errors.js';
import type { Elem, Expr, Family } from '../nft/ir.js';
import type { RulesetBuilder } from '../proxy/builder.js';
import { FAMILIES, Maps, TABLE } from '../proxy/names.js';
import { renderExpr } from '../nft/render.js';
import { silentLogger, type Logger } from '../telemetry/log.js';

function parts(e: Expr): Expr[] {
  return typeof e === 'object' && e !== null && 'concat' in e ? e.concat : [e];
}

/** The keys of entries that point at an endpoint their address no longer forwards to. */
export function staleAffinityKeys(elems: Iterable<Elem>, targets: Map<string, Set<string>>): Expr[] {
  const out: Expr[] = [];
  for (const el of elems) {
    if (!Array.isArray(el)) continue;
    const [, addr, proto, port] = parts(el[0]);
    const [ip, epPort] = parts(el[1]);
    const eps =
      targets.get(`${String(addr)}|${String(proto)}|${String(port)}`) ??
      targets.get(`*|${String(proto)}|${String(port)}`);
    if (!eps?.has(`${String(ip)}|${String(epPort)}`)) out.push(el[0]);
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
    const set = await this.nft.listSet(family, TABLE, Maps.affinity);
    if (!set?.elems.size) return 0;
    const stale = staleAffinityKeys(set.elems.values(), targets);
    if (!stale.length) return 0;
    await this.nft.apply({
      commands: [{ delete: { element: { family, table: TABLE, name: Maps.affinity, lines: stale.map(renderExpr) } } }],
    });
    return stale.length;
  }
}
