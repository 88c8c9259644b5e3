/**
 * Rules as nf_tables expressions: the IR statements nftproxy writes, turned into the
 * register machine code the kernel runs (what nft's netlink_linearize does for them).
 *
 * Each statement loads what it inspects into registers, then compares, looks up or acts on
 * them. Registers are counted in 32-bit units from REG_1; a statement starts from the first
 * register again. The choices here (register numbers, attribute order, when a prefix becomes
 * a shorter load) are nft 1.0.6's, so that a rule written here is byte for byte the rule nft
 * writes, and `nft list` shows it the same; tests check this against `nft --debug=mnl`.
 */
import type { AffinityUpdate, Expr, Family, Stmt } from '../ir.js';
import { NftError } from '../errors.js';
import { IFNAME } from '../render.js';
import { parseIP } from '../../net/ip.js';
import type { NlWriter } from './attr.js';
import {
  BitwiseAttr,
  BITWISE_MASK_XOR,
  BYTEORDER_HTON,
  ByteorderAttr,
  CmpAttr,
  CmpOp,
  CtAttr,
  CtKey,
  DataAttr,
  DynsetAttr,
  DynsetOp,
  ExprAttr,
  FibAttr,
  FibFlag,
  FibResult,
  HASH_JENKINS,
  HashAttr,
  ImmediateAttr,
  LIST_ELEM,
  LOOKUP_F_INV,
  LookupAttr,
  MasqAttr,
  MetaAttr,
  MetaKey,
  NatAttr,
  NatFlag,
  NatType,
  NFPROTO,
  NumgenAttr,
  NumgenType,
  PayloadAttr,
  PayloadBase,
  Reg,
  RejectAttr,
  RejectType,
  Verdict,
  VerdictAttr,
} from './constants.js';

/** What the linearizer needs to know about the sets a rule refers to. */
export interface SetRefs {
  /** The batch id of a set created in the same batch, if it is. */
  id(name: string): number | undefined;
  /** Whether the set is a concatenation with intervals (its lookups convert byte order). */
  concatInterval(name: string): boolean;
}

/** A value's kind, which decides how literals compared with it are encoded. */
type Kind = 'ipv4' | 'ipv6' | 'proto' | 'port' | 'u32' | 'ctstate' | 'ctstatus' | 'fibtype' | 'ifname';

/** An expression that loads into registers: its byte length and kind. */
interface Loadable {
  len: number;
  kind: Kind;
  /** Host byte order in the register (converted for interval lookups). */
  host?: boolean;
}

const CT_STATE: Record<string, number> = { invalid: 1, established: 2, related: 4, new: 8, untracked: 64 };
const CT_STATUS: Record<string, number> = {
  expected: 1,
  seen_reply: 2,
  assured: 4,
  confirmed: 8,
  snat: 16,
  dnat: 32,
  dying: 512,
};
const FIB_TYPE: Record<string, number> = {
  unicast: 1,
  local: 2,
  broadcast: 3,
  anycast: 4,
  multicast: 5,
  blackhole: 6,
  unreachable: 7,
  prohibit: 8,
};
const PROTOCOLS: Record<string, number> = { icmp: 1, tcp: 6, udp: 17, icmpv6: 58, sctp: 132 };

/** Header fields nftproxy reads: base, offset and length in bytes. */
const PAYLOAD: Record<string, { base: number; offset: number; len: number; kind: Kind }> = {
  'ip saddr': { base: PayloadBase.NETWORK, offset: 12, len: 4, kind: 'ipv4' },
  'ip daddr': { base: PayloadBase.NETWORK, offset: 16, len: 4, kind: 'ipv4' },
  'ip6 saddr': { base: PayloadBase.NETWORK, offset: 8, len: 16, kind: 'ipv6' },
  'ip6 daddr': { base: PayloadBase.NETWORK, offset: 24, len: 16, kind: 'ipv6' },
  'th sport': { base: PayloadBase.TRANSPORT, offset: 0, len: 2, kind: 'port' },
  'th dport': { base: PayloadBase.TRANSPORT, offset: 2, len: 2, kind: 'port' },
};

const units = (bytes: number) => Math.ceil(bytes / 4);

function unsupported(what: unknown): NftError {
  return NftError.invalid(`the netlink backend cannot encode ${JSON.stringify(what)}`);
}

/** Register number as written in an attribute: 128-bit numbering where it lines up. */
function regAttr(idx: number): number {
  return idx % 4 === 0 ? Reg.R1 + idx / 4 : Reg.REG32_00 + idx;
}

function be(len: number, v: number): Buffer {
  const b = Buffer.alloc(len);
  if (len === 1) b[0] = v;
  else if (len === 2) b.writeUInt16BE(v);
  else b.writeUInt32BE(v >>> 0);
  return b;
}

function hostU32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0);
  return b;
}

/** Encodes one rule's statements as the NFTA_RULE_EXPRESSIONS list. */
export class Linearizer {
  private low = 0;

  constructor(
    private readonly w: NlWriter,
    private readonly family: Family,
    private readonly sets: SetRefs,
  ) {}

  /** Writes the expressions of `stmts` (inside the caller's EXPRESSIONS nest). */
  rule(stmts: Stmt[]): void {
    for (const s of stmts) {
      this.low = 0;
      this.stmt(s);
    }
  }

  // -------------------------------------------------------------------------------------
  // Expressions, each as one NFTA_LIST_ELEM.

  private expr(name: string, body: () => void): void {
    const w = this.w;
    const el = w.nest(LIST_ELEM);
    w.str(ExprAttr.NAME, name);
    const data = w.nest(ExprAttr.DATA);
    body();
    w.endNest(data);
    w.endNest(el);
  }

  private value(type: number, bytes: Uint8Array): void {
    const n = this.w.nest(type);
    this.w.bytes(DataAttr.VALUE, bytes);
    this.w.endNest(n);
  }

  private cmp(reg: number, op: number, data: Uint8Array): void {
    this.expr('cmp', () => {
      this.w.u32(CmpAttr.SREG, regAttr(reg));
      this.w.u32(CmpAttr.OP, op);
      this.value(CmpAttr.DATA, data);
    });
  }

  private bitwise(reg: number, len: number, mask: Uint8Array, xor: Uint8Array, withOp: boolean): void {
    this.expr('bitwise', () => {
      this.w.u32(BitwiseAttr.SREG, regAttr(reg));
      this.w.u32(BitwiseAttr.DREG, regAttr(reg));
      if (withOp) this.w.u32(BitwiseAttr.OP, BITWISE_MASK_XOR);
      this.w.u32(BitwiseAttr.LEN, len);
      this.value(BitwiseAttr.MASK, mask);
      this.value(BitwiseAttr.XOR, xor);
    });
  }

  /** A lookup: a match (no dreg), a verdict map, or a map into registers from `dreg`. */
  private lookup(set: string, sreg: number, dreg: number | 'verdict' | undefined, inverted: boolean): void {
    const id = this.sets.id(set);
    this.expr('lookup', () => {
      this.w.u32(LookupAttr.SREG, regAttr(sreg));
      if (dreg !== undefined) this.w.u32(LookupAttr.DREG, dreg === 'verdict' ? Reg.VERDICT : regAttr(dreg));
      this.w.str(LookupAttr.SET, set);
      if (id !== undefined) this.w.u32(LookupAttr.SET_ID, id);
      if (inverted) this.w.u32(LookupAttr.FLAGS, LOOKUP_F_INV);
    });
  }

  private verdict(v: Stmt & object): void {
    this.expr('immediate', () => {
      this.w.u32(ImmediateAttr.DREG, Reg.VERDICT);
      const d = this.w.nest(ImmediateAttr.DATA);
      const vn = this.w.nest(DataAttr.VERDICT);
      const { code, chain } = verdictOf(v);
      this.w.u32(VerdictAttr.CODE, code);
      if (chain !== undefined) this.w.str(VerdictAttr.CHAIN, chain);
      this.w.endNest(vn);
      this.w.endNest(d);
    });
  }

  /** What loading `e` puts in registers, or undefined if it is not a load. */
  private loadable(e: Expr): Loadable | undefined {
    if (typeof e !== 'object' || e === null) return undefined;
    if ('payload' in e) {
      const p = PAYLOAD[`${e.payload.protocol} ${e.payload.field}`];
      return p && { len: p.len, kind: p.kind };
    }
    if ('meta' in e) {
      if (e.meta.key === 'l4proto') return { len: 1, kind: 'proto', host: true };
      if (e.meta.key === 'mark') return { len: 4, kind: 'u32', host: true };
      if (e.meta.key === 'iifname') return { len: 16, kind: 'ifname' };
      return undefined;
    }
    if ('ct' in e) {
      const k = e.ct.key;
      if (k === 'state') return { len: 4, kind: 'ctstate' };
      if (k === 'status') return { len: 4, kind: 'ctstatus' };
      if (k === 'ip daddr' || k === 'ip saddr') return { len: 4, kind: 'ipv4' };
      if (k === 'ip6 daddr' || k === 'ip6 saddr') return { len: 16, kind: 'ipv6' };
      if (k === 'proto-dst' || k === 'proto-src') return { len: 2, kind: 'port' };
      return undefined;
    }
    if ('fib' in e) return e.fib.result === 'type' ? { len: 4, kind: 'fibtype' } : undefined;
    if ('numgen' in e || 'jhash' in e) return { len: 4, kind: 'u32' };
    if ('&' in e || '|' in e || '^' in e) {
      const [l] = ('&' in e ? e['&'] : '|' in e ? e['|'] : e['^']) as [Expr, Expr];
      return this.loadable(l);
    }
    return undefined;
  }

  /** The register units a key takes (concatenations: each field rounded to 32 bits). */
  private keyUnits(e: Expr): number {
    if (typeof e === 'object' && e !== null && 'concat' in e) {
      return e.concat.reduce<number>((n, f) => n + units(this.loadable(f)?.len ?? 4), 0);
    }
    return 4;
  }

  private alloc(n: number): number {
    const r = this.low;
    this.low += n;
    return r;
  }

  /** Emits the loads of `e` into registers from `reg` on. */
  private gen(e: Expr, reg: number, opts: { convertHost?: boolean } = {}): void {
    if (typeof e !== 'object' || e === null) throw unsupported(e);
    if ('concat' in e) {
      let r = reg;
      for (const f of e.concat) {
        this.gen(f, r, opts);
        r += units(this.loadable(f)?.len ?? 4);
      }
      return;
    }
    if ('payload' in e) {
      const p = PAYLOAD[`${e.payload.protocol} ${e.payload.field}`];
      if (!p) throw unsupported(e);
      this.payload(reg, p.base, p.offset, p.len);
      return;
    }
    if ('meta' in e) {
      const key =
        e.meta.key === 'l4proto'
          ? MetaKey.L4PROTO
          : e.meta.key === 'mark'
            ? MetaKey.MARK
            : e.meta.key === 'iifname'
              ? MetaKey.IIFNAME
              : undefined;
      if (key === undefined) throw unsupported(e);
      this.expr('meta', () => {
        this.w.u32(MetaAttr.KEY, key);
        this.w.u32(MetaAttr.DREG, regAttr(reg));
      });
      // Interval sets compare whole fields big-endian: host-order fields are converted.
      if (opts.convertHost && key === MetaKey.L4PROTO) {
        this.expr('byteorder', () => {
          this.w.u32(ByteorderAttr.SREG, regAttr(reg));
          this.w.u32(ByteorderAttr.DREG, regAttr(reg));
          this.w.u32(ByteorderAttr.OP, BYTEORDER_HTON);
          this.w.u32(ByteorderAttr.LEN, 1);
          this.w.u32(ByteorderAttr.SIZE, 2);
        });
      }
      return;
    }
    if ('ct' in e) {
      const key = CtKey[e.ct.key as keyof typeof CtKey];
      if (key === undefined) throw unsupported(e);
      this.expr('ct', () => {
        this.w.u32(CtAttr.KEY, key);
        this.w.u32(CtAttr.DREG, regAttr(reg));
        if (e.ct.dir) {
          const s = this.w.open(CtAttr.DIRECTION);
          this.w.put(Buffer.from([e.ct.dir === 'original' ? 0 : 1]));
          this.w.close(s);
        }
      });
      return;
    }
    if ('fib' in e) {
      let flags = 0;
      for (const f of e.fib.flags) flags |= f === 'saddr' ? FibFlag.SADDR : f === 'daddr' ? FibFlag.DADDR : 0;
      if (e.fib.result !== 'type') throw unsupported(e);
      this.expr('fib', () => {
        this.w.u32(FibAttr.FLAGS, flags);
        this.w.u32(FibAttr.RESULT, FibResult.ADDRTYPE);
        this.w.u32(FibAttr.DREG, regAttr(reg));
      });
      return;
    }
    if ('numgen' in e) {
      const { mode, mod, offset } = e.numgen;
      this.expr('numgen', () => {
        this.w.u32(NumgenAttr.DREG, regAttr(reg));
        this.w.u32(NumgenAttr.MODULUS, mod);
        this.w.u32(NumgenAttr.TYPE, NumgenType[mode]);
        this.w.u32(NumgenAttr.OFFSET, offset);
      });
      return;
    }
    if ('jhash' in e) {
      const { expr, mod, seed, offset } = e.jhash;
      const src = this.alloc(4);
      this.gen(expr, src);
      const len = this.loadable(expr)?.len ?? 4;
      this.expr('hash', () => {
        this.w.u32(HashAttr.SREG, regAttr(src));
        this.w.u32(HashAttr.DREG, regAttr(reg));
        this.w.u32(HashAttr.LEN, len);
        this.w.u32(HashAttr.MODULUS, mod);
        this.w.u32(HashAttr.SEED, seed ?? 0);
        this.w.u32(HashAttr.OFFSET, offset ?? 0);
        this.w.u32(HashAttr.TYPE, HASH_JENKINS);
      });
      return;
    }
    if ('&' in e || '|' in e || '^' in e) {
      const op = '&' in e ? '&' : '|' in e ? '|' : '^';
      const [left, right] = (e as Record<string, [Expr, Expr]>)[op]!;
      const l = this.loadable(left);
      if (!l || typeof right !== 'number') throw unsupported(e);
      this.gen(left, reg);
      const ones = l.len === 4 ? 0xffffffff : (1 << (8 * l.len)) - 1;
      const enc = (v: number) => (l.host ? hostU32(v) : be(l.len, v));
      // nft writes every binary operation as (x & mask) ^ xor.
      if (op === '&') this.bitwise(reg, l.len, enc(right), enc(0), true);
      else if (op === '|') this.bitwise(reg, l.len, enc(ones & ~right), enc(right), true);
      else this.bitwise(reg, l.len, enc(ones), enc(right), true);
      return;
    }
    throw unsupported(e);
  }

  private payload(reg: number, base: number, offset: number, len: number): void {
    this.expr('payload', () => {
      this.w.u32(PayloadAttr.DREG, regAttr(reg));
      this.w.u32(PayloadAttr.BASE, base);
      this.w.u32(PayloadAttr.OFFSET, offset);
      this.w.u32(PayloadAttr.LEN, len);
    });
  }

  /** The bytes of a literal compared with a value of kind `k` and `len` bytes. */
  private literal(l: Loadable, v: Expr): Uint8Array {
    if (typeof v === 'number') return l.host || l.kind === 'u32' ? hostU32(v) : be(l.len, v);
    if (typeof v !== 'string') throw unsupported(v);
    switch (l.kind) {
      case 'ipv4':
      case 'ipv6': {
        const ip = parseIP(v);
        if (!ip || ip.bytes.length !== l.len) throw unsupported(v);
        return ip.bytes;
      }
      case 'proto': {
        const n = PROTOCOLS[v];
        if (n === undefined) throw unsupported(v);
        return Uint8Array.of(n);
      }
      case 'port':
        return be(2, Number(v));
      case 'ctstate':
        return hostU32(flagsOf(CT_STATE, v));
      case 'ctstatus':
        return hostU32(flagsOf(CT_STATUS, v));
      case 'fibtype': {
        const n = FIB_TYPE[v];
        if (n === undefined) throw unsupported(v);
        return hostU32(n);
      }
      default:
        return hostU32(Number(v));
    }
  }

  // -------------------------------------------------------------------------------------
  // Statements.

  private stmt(s: Stmt): void {
    if ('match' in s) return this.match(s.match.left, s.match.op, s.match.right);
    if ('vmap' in s) {
      const set = setName(s.vmap.data);
      const reg = this.alloc(this.keyUnits(s.vmap.key));
      this.gen(s.vmap.key, reg);
      this.lookup(set, reg, 'verdict', false);
      return;
    }
    if ('mangle' in s) {
      const key = s.mangle.key;
      if (typeof key !== 'object' || !('meta' in key) || key.meta.key !== 'mark') throw unsupported(s);
      const reg = this.alloc(4);
      this.gen(s.mangle.value, reg);
      this.expr('meta', () => {
        this.w.u32(MetaAttr.KEY, MetaKey.MARK);
        this.w.u32(MetaAttr.SREG, regAttr(reg));
      });
      return;
    }
    if ('dnat' in s) return this.dnat(s.dnat);
    if ('masquerade' in s) {
      const flags = s.masquerade?.flags;
      const list = flags === undefined ? [] : Array.isArray(flags) ? flags : [flags];
      let f = 0;
      for (const x of list)
        f |=
          x === 'fully-random'
            ? NatFlag.RANDOM_FULLY
            : x === 'random'
              ? NatFlag.RANDOM
              : x === 'persistent'
                ? NatFlag.PERSISTENT
                : 0;
      this.expr('masq', () => {
        if (f) this.w.u32(MasqAttr.FLAGS, f);
      });
      return;
    }
    if ('reject' in s) return this.reject(s.reject);
    if ('affinityUpdate' in s) return this.dynset(s.affinityUpdate);
    if ('counter' in s) {
      this.expr('counter', () => {
        this.w.u64(1, 0);
        this.w.u64(2, 0);
      });
      return;
    }
    this.verdict(s);
  }

  private match(left: Expr, op: string, right: Expr): void {
    // A lookup in a named set.
    if (typeof right === 'string' && right.startsWith('@')) {
      const set = right.slice(1);
      const reg = this.alloc(this.keyUnits(left));
      this.gen(left, reg, { convertHost: this.sets.concatInterval(set) });
      if (op !== '==' && op !== '!=') throw unsupported({ op, right });
      this.lookup(set, reg, undefined, op === '!=');
      return;
    }
    const l = this.loadable(left);
    if (!l) throw unsupported(left);
    const reg = this.alloc(4);
    if (op === 'in') {
      // A flag test: (x & flags) != 0.
      if (typeof right !== 'string') throw unsupported(right);
      this.gen(left, reg);
      this.bitwise(reg, l.len, this.literal(l, right), new Uint8Array(l.len), false);
      this.cmp(reg, CmpOp.NEQ, new Uint8Array(l.len));
      return;
    }
    const cmpOp = CMP_OPS[op];
    if (cmpOp === undefined) throw unsupported(op);
    if (l.kind === 'ifname') {
      // As nft: a name is compared with its NUL padding (IFNAMSIZ bytes), a `prefix*` over
      // the prefix's bytes only.
      if (typeof right !== 'string' || !IFNAME.test(right)) throw unsupported(right);
      this.gen(left, reg);
      const text = Buffer.from(right.endsWith('*') ? right.slice(0, -1) : right, 'latin1');
      const data = right.endsWith('*') ? text : Buffer.concat([text, Buffer.alloc(16 - text.length)]);
      this.cmp(reg, cmpOp, data);
      return;
    }
    if (typeof right === 'object' && right !== null && 'prefix' in right) {
      // A prefix: a byte-aligned one is a shorter load; otherwise load, mask, compare.
      const { addr, len } = right.prefix;
      const ip = parseIP(addr);
      const p =
        typeof left === 'object' && 'payload' in left
          ? PAYLOAD[`${left.payload.protocol} ${left.payload.field}`]
          : undefined;
      if (!ip || !p || ip.bytes.length !== l.len) throw unsupported(right);
      if (len % 8 === 0) {
        this.payload(reg, p.base, p.offset, len / 8);
        this.cmp(reg, cmpOp, ip.bytes.subarray(0, len / 8));
      } else {
        this.payload(reg, p.base, p.offset, p.len);
        const mask = new Uint8Array(l.len);
        for (let bit = 0; bit < len; bit++) mask[bit >> 3]! |= 0x80 >> (bit & 7);
        this.bitwise(reg, l.len, mask, new Uint8Array(l.len), false);
        this.cmp(reg, cmpOp, ip.bytes);
      }
      return;
    }
    this.gen(left, reg);
    const bitwise = typeof left === 'object' && ('&' in left || '|' in left || '^' in left);
    this.cmp(
      reg,
      cmpOp,
      bitwise && typeof right === 'number'
        ? l.host
          ? hostU32(right)
          : be(l.len, right)
        : this.literal(l, right),
    );
  }

  private dnat(d: Extract<Stmt, { dnat: unknown }>['dnat']): void {
    const family = d.family ?? this.family;
    const addr = d.addr;
    if (typeof addr !== 'object' || addr === null || !('map' in addr) || d.port !== undefined)
      throw unsupported(d);
    const set = setName(addr.map.data);
    // nft 1.0.6 holds the map key's registers (unused: the key goes to the address register)
    // besides the address register; sub-expressions such as jhash take registers after both.
    const amin = this.alloc(4);
    this.alloc(this.keyUnits(addr.map.key));
    this.gen(addr.map.key, amin);
    this.lookup(set, amin, amin, false);
    const addrUnits = family === 'ip6' ? 4 : 1;
    this.expr('nat', () => {
      this.w.u32(NatAttr.TYPE, NatType.DNAT);
      this.w.u32(NatAttr.FAMILY, NFPROTO[family]);
      this.w.u32(NatAttr.REG_ADDR_MIN, regAttr(amin));
      this.w.u32(NatAttr.REG_PROTO_MIN, regAttr(amin + addrUnits));
    });
  }

  private reject(r: Extract<Stmt, { reject: unknown }>['reject']): void {
    if (r?.type === 'tcp reset') {
      // nft adds the protocol dependency: a TCP reset only for TCP packets.
      const reg = this.alloc(4);
      this.gen({ meta: { key: 'l4proto' } }, reg);
      this.cmp(reg, CmpOp.EQ, Uint8Array.of(PROTOCOLS.tcp!));
      this.expr('reject', () => {
        this.w.u32(RejectAttr.TYPE, RejectType.TCP_RST);
        this.w.bytes(RejectAttr.ICMP_CODE, Uint8Array.of(0));
      });
      return;
    }
    // `reject with icmp(v6) type port-unreachable` (and a bare reject, which nft makes the same).
    const expr = r?.expr ?? 'port-unreachable';
    if (expr !== 'port-unreachable') throw unsupported(r);
    const code = this.family === 'ip6' ? 4 : 3;
    this.expr('reject', () => {
      this.w.u32(RejectAttr.TYPE, RejectType.ICMP_UNREACH);
      this.w.bytes(RejectAttr.ICMP_CODE, Uint8Array.of(code));
    });
  }

  private dynset(u: AffinityUpdate): void {
    const l3 = u.family === 'ip6' ? 'ip6' : 'ip';
    // `meta l4proto P` first: `ct original proto-dst` has no type without it.
    const preg = this.alloc(4);
    this.gen({ meta: { key: 'l4proto' } }, preg);
    this.cmp(preg, CmpOp.EQ, Uint8Array.of(PROTOCOLS[u.protocol]!));
    this.low = 0;
    const key: Expr = {
      concat: [
        { payload: { protocol: l3, field: 'saddr' } },
        { ct: { key: `${l3} daddr`, dir: 'original' } },
        { meta: { key: 'l4proto' } },
        { ct: { key: 'proto-dst', dir: 'original' } },
      ],
    };
    const data: Expr = {
      concat: [
        { payload: { protocol: l3, field: 'daddr' } },
        { payload: { protocol: 'th', field: 'dport' } },
      ],
    };
    const kreg = this.alloc(this.keyUnits(key));
    this.gen(key, kreg);
    const dreg = this.alloc(this.keyUnits(data));
    this.gen(data, dreg);
    const id = this.sets.id(u.map);
    this.expr('dynset', () => {
      this.w.u32(DynsetAttr.SREG_KEY, regAttr(kreg));
      this.w.u32(DynsetAttr.SREG_DATA, regAttr(dreg));
      this.w.u32(DynsetAttr.OP, DynsetOp.UPDATE);
      this.w.u64(DynsetAttr.TIMEOUT, u.timeout * 1000);
      this.w.str(DynsetAttr.SET_NAME, u.map);
      if (id !== undefined) this.w.u32(DynsetAttr.SET_ID, id);
    });
  }
}

const CMP_OPS: Record<string, number> = {
  '==': CmpOp.EQ,
  '!=': CmpOp.NEQ,
  '<': CmpOp.LT,
  '<=': CmpOp.LTE,
  '>': CmpOp.GT,
  '>=': CmpOp.GTE,
};

function flagsOf(table: Record<string, number>, text: string): number {
  let v = 0;
  for (const part of text.split(',')) {
    const n = table[part.trim()];
    if (n === undefined) throw unsupported(text);
    v |= n;
  }
  return v;
}

function setName(ref: Expr): string {
  if (typeof ref !== 'string' || !ref.startsWith('@')) throw unsupported(ref);
  return ref.slice(1);
}

/** The verdict code and chain of a verdict statement. */
export function verdictOf(v: object): { code: number; chain?: string } {
  if ('jump' in v) return { code: Verdict.jump, chain: (v as { jump: { target: string } }).jump.target };
  if ('goto' in v) return { code: Verdict.goto, chain: (v as { goto: { target: string } }).goto.target };
  if ('accept' in v) return { code: Verdict.accept };
  if ('drop' in v) return { code: Verdict.drop };
  if ('return' in v) return { code: Verdict.return };
  if ('continue' in v) return { code: Verdict.continue };
  throw unsupported(v);
}
