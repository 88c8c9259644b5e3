/**
 * The netlink backend: nftproxy speaks nf_tables itself, over one long-lived socket, instead
 * of starting `nft` for every transaction. A transaction is one batch (one datagram) that the
 * kernel commits whole or not at all; reads are dumps.
 *
 * The encoder writes what nft 1.0.6 writes for the same commands (see batch.ts), so a
 * ruleset loaded either way lists the same. Unlike nft 1.0.6, a rule added to an existing
 * table may use an existing typeof map: nothing re-parses typeof expressions here.
 */
import {
  type ApplyStages,
  type ApplyStats,
  type KnownElements,
  type NftBackend,
  unwatched,
} from '../backend.js';
import { createTable, emptyStats, type TableDescription } from '../diff.js';
import { NftError } from '../errors.js';
import type { Command, Family, Rule, Transaction, TxObject } from '../ir.js';
import type { TableState } from '../ruleset.js';
import { attrMap, attrStr, attrU32, messageAttrs, parseMessages, type Attr as NlAttr } from './attr.js';
import { BatchEncoder } from './batch.js';
import { NetlinkConnection } from './connection.js';
import {
  ChainAttr,
  DataAttr,
  Msg,
  RuleAttr,
  SetAttr,
  SetElemAttr,
  SetElemListAttr,
  SetFlag,
  TableAttr,
} from './constants.js';
import { type SetSpec, writeTextFields } from './datatypes.js';
import { chainKey, elementLines, ruleKey, setKey, specOfSetAttrs } from './decode.js';

/** Options of the netlink backend. */
export interface NetlinkBackendOptions {
  /** A network namespace (name under /run/netns, or a path) to program instead of our own. */
  netns?: string;
  /**
   * Element counters of sets this large or larger are asked for by key rather than dumped
   * (when the caller knows the elements). Default KEYED_READS_FROM.
   */
  keyedReadsFrom?: number;
}

const key3 = (family: string, table: string, set: string) => `${family} ${table} ${set}`;

/** Sets up to this many elements are read in full syncs; larger ones are rewritten. */
export const READ_LIMIT = 32768;

/** NFTA_SET_COUNT (kernel 6.x): elements in the set, reported with its declaration. */
const SET_COUNT = 20;
/**
 * Elements asked for by key in one request (counters): each is answered with a message (an
 * skb) of its own, so the receive buffer is made room for that many.
 */
const ASKED_PER_REQUEST = 1024;
/**
 * Where asking by key beats a dump: a dump walks the hash set from its start on every
 * ~32 KiB round, so it grows with the square of the set; asking costs one answer (and one
 * recv) per element. Both take ~250 ms at 61,000 elements; at 292,000 a dump takes 3.4 s
 * and asking 1.3 s (docs/benchmarks.md).
 */
export const KEYED_READS_FROM = 50_000;

/** The sets a rule looks up (`@name`). */
function setRefs(x: unknown, out: Set<string>): void {
  if (typeof x === 'string') {
    if (x.startsWith('@')) out.add(x.slice(1));
  } else if (Array.isArray(x)) {
    for (const v of x) setRefs(v, out);
  } else if (typeof x === 'object' && x !== null) {
    for (const v of Object.values(x)) setRefs(v, out);
    if ('affinityUpdate' in x) out.add((x as { affinityUpdate: { map: string } }).affinityUpdate.map);
  }
}

/** Backend that writes nf_tables netlink batches itself. */
export class NetlinkBackend implements NftBackend {
  readonly name = 'netlink';
  readonly typeofRulesNeedNewTable = false;
  /**
   * A dump of a set costs the kernel time quadratic in its size (each 32 KiB round walks past
   * the elements already sent): 275,000 backends take 9 s to read and 3 s to rewrite. Larger
   * sets are rewritten in a full sync.
   */
  readonly readLimit = READ_LIMIT;
  private conn: NetlinkConnection | undefined;
  /** Layouts of sets the kernel holds, as last seen or written. */
  private readonly specs = new Map<string, SetSpec>();

  constructor(private readonly opts: NetlinkBackendOptions = {}) {}

  private connection(): NetlinkConnection {
    this.conn ??= new NetlinkConnection(this.opts.netns ? { netns: this.opts.netns } : {});
    return this.conn;
  }

  /** The port id of our socket: the kernel's notifications of our commits carry it. */
  get portId(): number {
    return this.connection().portId;
  }

  /** Whether a commit by process `pid` was one of ours: this process commits through us. */
  ownsCommit(pid: number): boolean {
    return pid === process.pid;
  }

  close(): void {
    this.conn?.close();
    this.conn = undefined;
  }

  async apply(tx: Transaction, stages: ApplyStages = unwatched): Promise<ApplyStats> {
    if (tx.commands.length === 0) return { bytes: 0 };
    const conn = this.connection();
    this.learnSets(tx);
    const batch = await stages.encode(() =>
      BatchEncoder.encode(
        tx,
        { spec: (f, t, s) => this.specs.get(key3(f, t, s)) },
        conn.nextSeq(tx.commands.length * 2 + 1024),
      ),
    );
    const bytes = batch.buf.length;
    await stages.send(bytes, () => {
      const failures = conn.sendBatch(batch.buf, batch.messages);
      if (failures.length) {
        // What we knew of the tables involved may be wrong now; read it again when needed.
        this.forget(tx);
        NetlinkConnection.check(failures); // throws, with the errno as exit code
      }
    });
    for (const t of batch.deletedTables) {
      for (const k of [...this.specs.keys()]) if (k.startsWith(`${t} `)) this.specs.delete(k);
    }
    for (const c of tx.commands) {
      if ('delete' in c && ('set' in c.delete || 'map' in c.delete)) {
        const s =
          'set' in c.delete
            ? c.delete.set
            : (c.delete as { map: { family: Family; table: string; name: string } }).map;
        this.specs.delete(key3(s.family, s.table, s.name));
      }
    }
    for (const [k, spec] of batch.created) this.specs.set(k, spec);
    return { bytes };
  }

  /** Makes sure the layouts of sets the transaction uses but does not create are known. */
  private learnSets(tx: Transaction): void {
    const created = new Set<string>();
    const wanted = new Map<string, { family: Family; table: string }>();
    for (const c of tx.commands) {
      const o = Object.values(c)[0] as TxObject;
      if (('set' in o || 'map' in o) && 'add' in c) {
        const s = 'set' in o ? o.set : o.map;
        created.add(key3(s.family, s.table, s.name));
      } else if ('table' in o && 'delete' in c) {
        for (const k of [...created])
          if (k.startsWith(`${o.table.family} ${o.table.name} `)) created.delete(k);
      } else if ('element' in o) {
        const e = o.element;
        const k = key3(e.family, e.table, e.name);
        if (!created.has(k) && !this.specs.has(k)) wanted.set(k, { family: e.family, table: e.table });
      } else if ('rule' in o) {
        const r: Rule = o.rule;
        const refs = new Set<string>();
        setRefs(r.expr, refs);
        for (const name of refs) {
          const k = key3(r.family, r.table, name);
          if (!created.has(k) && !this.specs.has(k)) wanted.set(k, { family: r.family, table: r.table });
        }
      }
    }
    const tables = new Map<string, { family: Family; table: string }>();
    for (const t of wanted.values()) tables.set(`${t.family} ${t.table}`, t);
    for (const t of tables.values()) this.readSets(t.family, t.table);
  }

  private forget(tx: Transaction): void {
    const tables = new Set<string>();
    for (const c of tx.commands) {
      const o = Object.values(c)[0] as TxObject;
      const v = Object.values(o)[0] as { family: Family; table?: string; name: string };
      tables.add(`${v.family} ${'table' in o ? v.name : v.table} `);
    }
    for (const k of [...this.specs.keys()]) for (const t of tables) if (k.startsWith(t)) this.specs.delete(k);
  }

  /** Reads every set declaration of a table: canonical keys and layouts (remembered). */
  private readSets(family: Family, table: string): Map<string, Map<number, NlAttr>> {
    const out = new Map<string, Map<number, NlAttr>>();
    for (const buf of this.connection().dump(Msg.GETSET, family, (w) => w.str(SetAttr.TABLE, table)) ?? []) {
      const a = attrMap(buf);
      if (attrStr(a.get(SetAttr.TABLE)) !== table) continue;
      const name = attrStr(a.get(SetAttr.NAME))!;
      out.set(name, a);
      try {
        this.specs.set(key3(family, table, name), specOfSetAttrs(a));
      } catch {
        // A set of datatypes we do not write (someone else's): never ours to fill.
      }
    }
    return out;
  }

  async describeTable(family: Family, table: string): Promise<TableDescription | undefined> {
    const conn = this.connection();
    if (!conn.get(Msg.GETTABLE, family, (w) => w.str(TableAttr.NAME, table))) return undefined;
    const d: TableDescription = { chains: new Map(), sets: new Map() };
    for (const buf of conn.dump(Msg.GETCHAIN, family, (w) => w.str(ChainAttr.TABLE, table)) ?? []) {
      const a = attrMap(buf);
      if (attrStr(a.get(ChainAttr.TABLE)) !== table) continue;
      d.chains.set(attrStr(a.get(ChainAttr.NAME))!, {
        def: chainKey(a),
        base: a.has(ChainAttr.HOOK),
        rules: [],
      });
    }
    for (const buf of conn.dump(Msg.GETRULE, family, (w) => w.str(RuleAttr.TABLE, table)) ?? []) {
      const a = attrMap(buf);
      if (attrStr(a.get(RuleAttr.TABLE)) !== table) continue;
      const chain = d.chains.get(attrStr(a.get(RuleAttr.CHAIN))!);
      chain?.rules.push(ruleKey(a.get(RuleAttr.EXPRESSIONS)?.data ?? Buffer.alloc(0)));
    }
    for (const [name, a] of this.readSets(family, table)) d.sets.set(name, describedSet(a));
    return d;
  }

  async listElements(family: Family, table: string, set: string): Promise<string[] | undefined> {
    const d = this.dumpElements(family, table, set);
    return d && elementLines(d.spec, d.payloads);
  }

  /** The counters of a set's elements (declared with `counter`): line -> packets. */
  async listElementCounters(
    family: Family,
    table: string,
    set: string,
    known?: KnownElements,
  ): Promise<Map<string, number> | undefined> {
    if (known && known.count >= (this.opts.keyedReadsFrom ?? KEYED_READS_FROM)) {
      const asked = this.elementsAsked(family, table, set, known.lines());
      if (asked) return asked;
      // Not a plain set or map, or an element missing (changed from outside): the dump.
    }
    const d = this.dumpElements(family, table, set);
    if (!d) return undefined;
    const counters = new Map<string, number>();
    elementLines(d.spec, d.payloads, counters);
    return counters;
  }

  /**
   * The counters of these elements (lines: their keys are read), asked for by key, a batch
   * per request: the kernel answers each element by a hash lookup, where a dump walks the
   * set from its start again on every round (quadratic in the set's size). Undefined when
   * the set is an interval set (keys are ranges) or an element is not there.
   */
  private elementsAsked(
    family: Family,
    table: string,
    set: string,
    lines: readonly string[],
  ): Map<string, number> | undefined {
    let spec = this.specs.get(key3(family, table, set));
    if (!spec) {
      this.readSets(family, table);
      spec = this.specs.get(key3(family, table, set));
    }
    if (!spec || spec.interval) return undefined;
    const conn = this.connection();
    const counters = new Map<string, number>();
    for (let i = 0; i < lines.length; i += ASKED_PER_REQUEST) {
      const batch = lines.slice(i, i + ASKED_PER_REQUEST);
      const payloads = conn.getMany(Msg.GETSETELEM, family, batch.length, (w) => {
        w.str(SetElemListAttr.TABLE, table);
        w.str(SetElemListAttr.SET, set);
        const list = w.nest(SetElemListAttr.ELEMENTS);
        batch.forEach((line, j) => {
          const colon = line.indexOf(' : ');
          const e = w.nest(j + 1);
          const k = w.nest(SetElemAttr.KEY);
          const v = w.open(DataAttr.VALUE);
          w.ensure(spec.key.len + 4);
          writeTextFields(spec.key, line, 0, colon < 0 ? line.length : colon, w.buf, w.pos);
          w.pos += spec.key.len;
          w.close(v);
          w.endNest(k);
          w.endNest(e);
        });
        w.endNest(list);
      });
      if (!payloads) return undefined;
      elementLines(spec, payloads, counters);
    }
    return counters;
  }

  /** A set's declaration and the kernel's dump of its elements; undefined if there is no such set. */
  private dumpElements(family: Family, table: string, set: string) {
    const conn = this.connection();
    let spec = this.specs.get(key3(family, table, set));
    if (!spec) {
      this.readSets(family, table);
      spec = this.specs.get(key3(family, table, set));
      if (!spec) return undefined;
    }
    const payloads = conn.dump(Msg.GETSETELEM, family, (w) => {
      w.str(SetElemListAttr.TABLE, table);
      w.str(SetElemListAttr.SET, set);
    });
    return payloads ? { spec, payloads } : undefined;
  }

  /**
   * A desired table in the kernel's terms: its chains, rules and sets encoded as they would
   * be sent, then read as the kernel's dumps are.
   */
  describe = (t: Parameters<NftBackend['describe']>[0]): TableDescription => {
    const commands: Command[] = [];
    for (const c of t.chains.values()) commands.push({ add: { chain: c.chain } });
    for (const s of t.sets.values())
      commands.push({ add: s.def.map === undefined ? { set: { ...s.def } } : { map: { ...s.def } } });
    for (const c of t.chains.values())
      for (const expr of c.rules)
        commands.push({
          add: { rule: { family: c.chain.family, table: c.chain.table, chain: c.chain.name, expr } },
        });
    const batch = BatchEncoder.encode({ commands }, { spec: () => undefined }, 1);
    const d: TableDescription = { chains: new Map(), sets: new Map() };
    for (const m of parseMessages(batch.buf)) {
      const a = attrMap(messageAttrs(m));
      switch (m.type & 0xff) {
        case Msg.NEWCHAIN:
          d.chains.set(attrStr(a.get(ChainAttr.NAME))!, {
            def: chainKey(a),
            base: a.has(ChainAttr.HOOK),
            rules: [],
          });
          break;
        case Msg.NEWRULE:
          d.chains
            .get(attrStr(a.get(RuleAttr.CHAIN))!)!
            .rules.push(ruleKey(a.get(RuleAttr.EXPRESSIONS)!.data));
          break;
        case Msg.NEWSET:
          d.sets.set(attrStr(a.get(SetAttr.NAME))!, describedSet(a));
          break;
      }
    }
    return d;
  };
}

/**
 * Checks that the kernel takes every chain, rule and set of these tables: creates each under
 * another name and deletes it again, in one batch (nothing stays; the kernel validates every
 * message before it commits). Returns what it refused, or undefined.
 */
export async function probeNetlink(
  backend: NetlinkBackend,
  tables: TableState[],
): Promise<string | undefined> {
  const name = 'nftproxy-probe';
  const commands: Command[] = [];
  for (const t of tables) {
    const renamed: TableState = {
      table: { ...t.table, name },
      chains: new Map(
        [...t.chains].map(([n, c]) => [n, { chain: { ...c.chain, table: name }, rules: c.rules }]),
      ),
      sets: new Map([...t.sets].map(([n, st]) => [n, { def: { ...st.def, table: name }, elems: new Map() }])),
    };
    commands.push(...createTable({ skeleton: renamed, lines: new Map() }, emptyStats()));
    commands.push({ delete: { table: renamed.table } });
  }
  try {
    await backend.apply({ commands });
    return undefined;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
}

function describedSet(a: Map<number, NlAttr>): {
  def: string;
  dynamic: boolean;
  map: boolean;
  count?: number;
} {
  const flags = attrU32(a.get(SetAttr.FLAGS)) ?? 0;
  const count = attrU32(a.get(SET_COUNT));
  return {
    def: setKey(a),
    dynamic: (flags & SetFlag.EVAL) !== 0,
    map: (flags & SetFlag.MAP) !== 0,
    ...(count !== undefined ? { count } : {}),
  };
}

/** Whether netlink can be used here (a netfilter netlink socket opens). */
export function netlinkAvailable(netns?: string): string | undefined {
  try {
    new NetlinkConnection(netns ? { netns } : {}).close();
    return undefined;
  } catch (e) {
    return e instanceof NftError || e instanceof Error ? e.message : String(e);
  }
}
