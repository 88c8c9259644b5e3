/**
 * A transaction as one nfnetlink batch: BATCH_BEGIN, one message per command (element lists
 * split so that each nest fits its 16-bit length, as nft does), BATCH_END. The kernel applies
 * a batch as one transaction: all of it, or nothing.
 *
 * Messages carry the attributes in the order libnftnl writes them, so a batch here is byte
 * for byte what nft sends for the same commands (tests compare the two); every message asks
 * for an acknowledgement, so the kernel's answer names each message that failed.
 */
import type { Chain, Command, Family, NftSet, Rule, Table, Transaction, TxObject } from '../ir.js';
import { NftError } from '../errors.js';
import { renderCommand } from '../render.js';
import { NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST, NlWriter } from './attr.js';
import {
  ChainAttr,
  DataAttr,
  ExprAttr,
  Hook,
  HookAttr,
  LIST_ELEM,
  Msg,
  msgType,
  NFNL_MSG_BATCH_BEGIN,
  NFNL_MSG_BATCH_END,
  NFNL_SUBSYS_NFTABLES,
  NFPROTO,
  RuleAttr,
  SET_ELEM_INTERVAL_END,
  SetAttr,
  SetDescAttr,
  SetElemAttr,
  SetElemListAttr,
  SetFieldAttr,
  SetFlag,
  TableAttr,
  VerdictAttr,
} from './constants.js';
import {
  encodeIntervalKey,
  type Layout,
  parseVerdict,
  type SetSpec,
  specOfDef,
  writeTextFields,
} from './datatypes.js';
import { Linearizer } from './linearize.js';
import { setUserdata, tableUserdata } from './udata.js';

/** Set layouts the kernel already holds (sets not created by this batch). */
export interface KnownSets {
  spec(family: Family, table: string, set: string): SetSpec | undefined;
}

/** One message of an encoded batch: its sequence number and the command it carries. */
export interface BatchMessage {
  seq: number;
  /** The command as nft text, shortened, for error messages (computed when asked). */
  what: () => string;
}

/** An encoded batch. */
export interface Batch {
  buf: Buffer;
  messages: BatchMessage[];
  /** Set layouts created by this batch, by `family table set`, for the caller to remember. */
  created: Map<string, SetSpec>;
  /** Tables deleted by this batch (`family table`): what was known of them is gone. */
  deletedTables: Set<string>;
}

/** The largest payload of a nested attribute: its length is 16 bits. */
const MAX_NEST = 0xffff;

const key3 = (family: string, table: string, set: string) => `${family} ${table} ${set}`;

function objectOf(o: TxObject): { kind: string; value: unknown } {
  const [kind, value] = Object.entries(o)[0]!;
  return { kind, value };
}

/** Encodes a transaction. `seq` is the first sequence number to use. */
export class BatchEncoder {
  private readonly w: NlWriter;
  private seq: number;
  private readonly messages: BatchMessage[] = [];
  /** Sets created in this batch: their batch id and layout. */
  private readonly newSets = new Map<string, { id: number; spec: SetSpec }>();
  private readonly deletedTables = new Set<string>();
  private nextSetId = 1;

  constructor(
    private readonly known: KnownSets,
    seq: number,
    sizeHint = 1 << 16,
  ) {
    this.w = new NlWriter(sizeHint);
    this.seq = seq;
  }

  /** The whole transaction as a batch. */
  static encode(tx: Transaction, known: KnownSets, seq: number): Batch {
    const e = new BatchEncoder(known, seq, estimate(tx));
    return e.encode(tx);
  }

  encode(tx: Transaction): Batch {
    const w = this.w;
    const begin = w.begin(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, this.seq++, 0, NFNL_SUBSYS_NFTABLES);
    w.end(begin);
    for (const c of tx.commands) this.command(c);
    const end = w.begin(NFNL_MSG_BATCH_END, NLM_F_REQUEST, this.seq++, 0, NFNL_SUBSYS_NFTABLES);
    w.end(end);
    const created = new Map<string, SetSpec>();
    for (const [k, v] of this.newSets) created.set(k, v.spec);
    return { buf: w.view(), messages: this.messages, created, deletedTables: this.deletedTables };
  }

  private begin(msg: number, flags: number, family: Family, what: () => string): number {
    const seq = this.seq++;
    this.messages.push({ seq, what });
    return this.w.begin(msgType(msg), NLM_F_REQUEST | NLM_F_ACK | flags, seq, NFPROTO[family]);
  }

  private command(c: Command): void {
    const op = 'add' in c ? 'add' : 'delete' in c ? 'delete' : 'flush';
    const obj = (c as Record<string, TxObject>)[op]!;
    const { kind, value } = objectOf(obj);
    const text = () => shorten(renderCommand(c));
    switch (`${op} ${kind}`) {
      case 'add table':
        return this.addTable(value as Table, text);
      case 'delete table':
        return this.delTable(value as Table, text);
      case 'add chain':
        return this.addChain(value as Chain, text);
      case 'delete chain':
        return this.delChain(value as Chain, text);
      case 'flush chain':
        return this.flushChain(value as Chain, text);
      case 'add rule':
        return this.addRule(value as Rule, text);
      case 'add set':
      case 'add map':
        return this.addSet(value as NftSet, text);
      case 'delete set':
      case 'delete map':
        return this.delSet(value as NftSet, text);
      case 'flush set':
      case 'flush map':
        return this.flushSet(value as NftSet, text);
      case 'add element':
      case 'delete element':
        return this.elements(
          op as 'add' | 'delete',
          value as { family: Family; table: string; name: string; lines: string[] },
        );
      default:
        throw NftError.invalid(`the netlink backend cannot encode "${op} ${kind}"`);
    }
  }

  private addTable(t: Table, what: () => string): void {
    const w = this.w;
    const m = this.begin(Msg.NEWTABLE, NLM_F_CREATE, t.family, what);
    w.str(TableAttr.NAME, t.name);
    w.u32(TableAttr.FLAGS, 0);
    const udata = tableUserdata(t.comment);
    if (udata) w.bytes(TableAttr.USERDATA, udata);
    w.end(m);
  }

  private delTable(t: Table, what: () => string): void {
    const w = this.w;
    const m = this.begin(Msg.DELTABLE, 0, t.family, what);
    w.str(TableAttr.NAME, t.name);
    w.end(m);
    const prefix = `${t.family} ${t.name} `;
    for (const k of [...this.newSets.keys()]) if (k.startsWith(prefix)) this.newSets.delete(k);
    this.deletedTables.add(`${t.family} ${t.name}`);
  }

  private addChain(c: Chain, what: () => string): void {
    const w = this.w;
    const m = this.begin(Msg.NEWCHAIN, NLM_F_CREATE, c.family, what);
    w.str(ChainAttr.TABLE, c.table);
    w.str(ChainAttr.NAME, c.name);
    if (c.type && c.hook) {
      w.str(ChainAttr.TYPE, c.type);
      w.u32(ChainAttr.POLICY, c.policy === 'drop' ? 0 : 1);
      const h = w.nest(ChainAttr.HOOK);
      w.u32(HookAttr.HOOKNUM, Hook[c.hook]);
      w.u32(HookAttr.PRIORITY, c.prio ?? 0);
      w.endNest(h);
    }
    if (c.comment) throw NftError.invalid('chain comments are not supported by the netlink backend');
    w.end(m);
  }

  private delChain(c: Chain, what: () => string): void {
    const w = this.w;
    const m = this.begin(Msg.DELCHAIN, 0, c.family, what);
    w.str(ChainAttr.TABLE, c.table);
    w.str(ChainAttr.NAME, c.name);
    w.end(m);
  }

  private flushChain(c: Chain, what: () => string): void {
    const w = this.w;
    const m = this.begin(Msg.DELRULE, 0, c.family, what);
    w.str(RuleAttr.TABLE, c.table);
    w.str(RuleAttr.CHAIN, c.name);
    w.end(m);
  }

  private spec(family: Family, table: string, set: string): SetSpec | undefined {
    const k = key3(family, table, set);
    const made = this.newSets.get(k);
    if (made) return made.spec;
    if (this.deletedTables.has(`${family} ${table}`)) return undefined;
    return this.known.spec(family, table, set);
  }

  private addRule(r: Rule, what: () => string): void {
    const w = this.w;
    if (r.comment) throw NftError.invalid('rule comments are not supported by the netlink backend');
    const m = this.begin(Msg.NEWRULE, NLM_F_CREATE | NLM_F_APPEND, r.family, what);
    w.str(RuleAttr.TABLE, r.table);
    w.str(RuleAttr.CHAIN, r.chain);
    const exprs = w.nest(RuleAttr.EXPRESSIONS);
    new Linearizer(w, r.family, {
      id: (name) => this.newSets.get(key3(r.family, r.table, name))?.id,
      concatInterval: (name) => {
        const s = this.spec(r.family, r.table, name);
        return !!s && s.interval && s.key.fields.length > 1;
      },
    }).rule(r.expr);
    w.endNest(exprs);
    w.end(m);
  }

  private addSet(s: NftSet, what: () => string): void {
    const w = this.w;
    const spec = specOfDef(s);
    const id = this.nextSetId++;
    const m = this.begin(Msg.NEWSET, NLM_F_CREATE, s.family, what);
    w.str(SetAttr.TABLE, s.table);
    w.str(SetAttr.NAME, s.name);
    w.u32(SetAttr.FLAGS, spec.flags);
    w.u32(SetAttr.KEY_TYPE, spec.key.type);
    w.u32(SetAttr.KEY_LEN, spec.key.len);
    if (spec.verdict) {
      w.u32(SetAttr.DATA_TYPE, 0xffffff00);
      w.u32(SetAttr.DATA_LEN, 0);
    } else if (spec.data) {
      w.u32(SetAttr.DATA_TYPE, spec.data.type);
      w.u32(SetAttr.DATA_LEN, spec.data.len);
    }
    w.u32(SetAttr.ID, id);
    const concatFields = spec.flags & SetFlag.CONCAT ? spec.key.fields : undefined;
    if (s.size !== undefined || concatFields) {
      const d = w.nest(SetAttr.DESC);
      if (s.size !== undefined) w.u32(SetDescAttr.SIZE, s.size);
      if (concatFields) {
        const c = w.nest(SetDescAttr.CONCAT);
        for (const f of concatFields) {
          const el = w.nest(LIST_ELEM);
          w.u32(SetFieldAttr.LEN, f.len);
          w.endNest(el);
        }
        w.endNest(c);
      }
      w.endNest(d);
    }
    w.bytes(SetAttr.USERDATA, setUserdata(s));
    for (const st of s.stmt ?? []) {
      if (!('counter' in st))
        throw NftError.invalid('only counters can be set statements in the netlink backend');
      const e = w.nest(SetAttr.EXPR);
      w.str(ExprAttr.NAME, 'counter');
      w.endNest(w.nest(ExprAttr.DATA));
      w.endNest(e);
    }
    w.end(m);
    this.newSets.set(key3(s.family, s.table, s.name), { id, spec });
  }

  private delSet(s: NftSet, what: () => string): void {
    const w = this.w;
    const m = this.begin(Msg.DELSET, 0, s.family, what);
    w.str(SetAttr.TABLE, s.table);
    w.str(SetAttr.NAME, s.name);
    w.end(m);
    this.newSets.delete(key3(s.family, s.table, s.name));
  }

  private flushSet(s: NftSet, what: () => string): void {
    const w = this.w;
    const m = this.begin(Msg.DELSETELEM, 0, s.family, what);
    // libnftnl writes these two the other way round for a flush.
    w.str(SetElemListAttr.SET, s.name);
    w.str(SetElemListAttr.TABLE, s.table);
    w.end(m);
  }

  private elements(
    op: 'add' | 'delete',
    el: { family: Family; table: string; name: string; lines: string[] },
  ): void {
    const spec = this.spec(el.family, el.table, el.name);
    if (!spec) {
      throw new NftError(
        'not-found',
        `${op} element ${el.family} ${el.table} ${el.name}: the set is not known to the netlink backend`,
      );
    }
    const id = this.newSets.get(key3(el.family, el.table, el.name))?.id;
    const writer = new ElementWriter(this, el, spec, op, id);
    if (spec.interval && spec.key.fields.length === 1) writer.rbtree(allLines(el.lines));
    else for (const block of el.lines) writer.lines(block);
    writer.finish();
  }

  /** Opens an element message; used by ElementWriter. */
  openElementMessage(
    op: 'add' | 'delete',
    el: { family: Family; table: string; name: string },
    id: number | undefined,
    count: () => number,
  ): { msg: number; nest: number } {
    const w = this.w;
    const msg = this.begin(
      op === 'add' ? Msg.NEWSETELEM : Msg.DELSETELEM,
      op === 'add' ? NLM_F_CREATE : 0,
      el.family,
      () => `${op} element ${el.family} ${el.table} ${el.name} (${count()} elements)`,
    );
    w.str(SetElemListAttr.TABLE, el.table);
    w.str(SetElemListAttr.SET, el.name);
    if (id !== undefined) w.u32(SetElemListAttr.SET_ID, id);
    const nest = w.nest(SetElemListAttr.ELEMENTS);
    return { msg, nest };
  }

  get writer(): NlWriter {
    return this.w;
  }
}

/** All lines of line blocks. */
function allLines(blocks: string[]): string[] {
  const out: string[] = [];
  for (const b of blocks) for (const l of b.split('\n')) if (l) out.push(l);
  return out;
}

/** Writes a set's elements, starting a new message whenever the element nest is full. */
class ElementWriter {
  private cur: { msg: number; nest: number } | undefined;
  private index = 0;
  private readonly counts: number[] = [];

  constructor(
    private readonly enc: BatchEncoder,
    private readonly el: { family: Family; table: string; name: string },
    private readonly spec: SetSpec,
    private readonly op: 'add' | 'delete',
    private readonly id: number | undefined,
  ) {}

  private get w(): NlWriter {
    return this.enc.writer;
  }

  private open(): void {
    const n = this.counts.length;
    this.counts.push(0);
    // libnftnl numbers the list entries of one command on across its messages.
    this.cur = this.enc.openElementMessage(this.op, this.el, this.id, () => this.counts[n]!);
  }

  private close(): void {
    if (!this.cur) return;
    this.w.endNest(this.cur.nest);
    this.w.end(this.cur.msg);
    this.cur = undefined;
  }

  finish(): void {
    this.close();
  }

  /** Writes one element with `body`, moving to a new message if it does not fit. */
  private element(body: () => void): void {
    if (!this.cur) this.open();
    const w = this.w;
    const at = w.pos;
    const write = () => {
      // The entry's attribute type is its number, kept to 16 bits with the nested flag. An
      // entry that did not fit used up its number (as in libnftnl).
      const e = w.nest(++this.index & 0x7fff);
      body();
      w.endNest(e);
    };
    write();
    if (w.pos - this.cur!.nest > MAX_NEST) {
      w.pos = at;
      this.close();
      this.open();
      write();
    }
    this.counts[this.counts.length - 1]!++;
  }

  private value(type: number, bytes: Uint8Array): void {
    const n = this.w.nest(type);
    this.w.bytes(DataAttr.VALUE, bytes);
    this.w.endNest(n);
  }

  /** A DATA nest with a VALUE of `l` read from `text[start, end)`, written in place. */
  private textValue(type: number, l: Layout, text: string, start: number, end: number): void {
    const w = this.w;
    const n = w.nest(type);
    const v = w.open(DataAttr.VALUE);
    w.ensure(l.len + 4);
    writeTextFields(l, text, start, end, w.buf, w.pos);
    w.pos += l.len;
    w.close(v);
    w.endNest(n);
  }

  /** Elements of a non-interval set or a concatenation with intervals, one per line. */
  lines(block: string): void {
    let start = 0;
    while (start < block.length) {
      let nl = block.indexOf('\n', start);
      if (nl < 0) nl = block.length;
      if (nl > start) {
        try {
          this.line(block, start, nl);
        } catch (e) {
          if (!(e instanceof NftError)) throw e;
          throw NftError.invalid(
            `set ${this.spec.name}: ${e.message}: in element ${JSON.stringify(block.slice(start, nl))}`,
          );
        }
      }
      start = nl + 1;
    }
  }

  /** One element from `text[start, end)`, moving to a new message if it does not fit. */
  private line(text: string, start: number, end: number): void {
    if (!this.cur) this.open();
    const w = this.w;
    const at = w.pos;
    this.writeLine(text, start, end);
    if (w.pos - this.cur!.nest > MAX_NEST) {
      w.pos = at;
      this.close();
      this.open();
      this.writeLine(text, start, end);
    }
    this.counts[this.counts.length - 1]!++;
  }

  private writeLine(text: string, start: number, end: number): void {
    const { spec, w } = this;
    const colon = text.indexOf(' : ', start);
    const keyEnd = colon >= 0 && colon < end ? colon : end;
    // The entry's attribute type is its number, kept to 16 bits with the nested flag. An
    // entry that did not fit used up its number (as in libnftnl).
    const e = w.nest(++this.index & 0x7fff);
    if (spec.interval) {
      const { start: s, end: x } = encodeIntervalKey(spec.key, text.slice(start, keyEnd).split(' . '));
      this.value(SetElemAttr.KEY, s);
      this.value(SetElemAttr.KEY_END, x);
    } else {
      this.textValue(SetElemAttr.KEY, spec.key, text, start, keyEnd);
    }
    if (this.op === 'add' && (spec.data || spec.verdict)) {
      if (keyEnd === end) throw NftError.invalid(`element of map ${spec.name} without data`);
      const dataStart = keyEnd + 3;
      if (spec.verdict) {
        const v = parseVerdict(text.slice(dataStart, end));
        const d = w.nest(SetElemAttr.DATA);
        const vn = w.nest(DataAttr.VERDICT);
        w.u32(VerdictAttr.CODE, v.code);
        if (v.chain !== undefined) w.str(VerdictAttr.CHAIN, v.chain);
        w.endNest(vn);
        w.endNest(d);
      } else {
        this.textValue(SetElemAttr.DATA, spec.data!, text, dataStart, end);
      }
    }
    w.endNest(e);
  }

  /**
   * Elements of a one-field interval set (the kernel's rbtree): each interval is a start
   * element and an end element (the first value after it, flagged INTERVAL_END). As nft does,
   * an add starts with an end element at zero when nothing starts there, and an interval
   * reaching the top of the range gets no end element but an "open" flag in its userdata.
   */
  rbtree(lines: string[]): void {
    const t = this.spec.key.fields[0]!;
    const intervals = lines
      .map((l) => encodeIntervalKey(this.spec.key, [l]))
      .map(({ start, end }) => ({ start, end: increment(end) }));
    intervals.sort((a, b) => Buffer.compare(a.start, b.start));
    const zero = new Uint8Array(t.len);
    if (this.op === 'add' && intervals.length && Buffer.compare(intervals[0]!.start, zero) !== 0) {
      this.element(() => {
        this.w.u32(SetElemAttr.FLAGS, SET_ELEM_INTERVAL_END);
        this.value(SetElemAttr.KEY, zero);
      });
    }
    for (const { start, end } of intervals) {
      this.element(() => {
        this.value(SetElemAttr.KEY, start);
        // NFTNL_UDATA_SET_ELEM_FLAGS = NFTNL_SET_ELEM_F_INTERVAL_OPEN
        if (!end) this.w.bytes(SetElemAttr.USERDATA, Uint8Array.of(1, 4, 1, 0, 0, 0));
      });
      if (end) {
        this.element(() => {
          this.w.u32(SetElemAttr.FLAGS, SET_ELEM_INTERVAL_END);
          this.value(SetElemAttr.KEY, end);
        });
      }
    }
  }
}

/** The value after `b` (big-endian), or undefined when `b` is the largest. */
function increment(b: Uint8Array): Uint8Array | undefined {
  const out = Uint8Array.from(b);
  for (let i = out.length - 1; i >= 0; i--) {
    if (out[i] !== 0xff) {
      out[i]!++;
      return out;
    }
    out[i] = 0;
  }
  return undefined;
}

/** A rough size of the batch, to allocate once. */
function estimate(tx: Transaction): number {
  let n = 4096;
  for (const c of tx.commands) {
    const o = Object.values(c)[0] as TxObject;
    if ('element' in o) for (const b of o.element.lines) n += b.length * 1.5 + 16;
    else n += 256;
  }
  return Math.ceil(n);
}

function shorten(s: string): string {
  return s.length > 300 ? `${s.slice(0, 300)}...` : s;
}
