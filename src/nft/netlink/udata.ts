/**
 * Userdata: opaque bytes the kernel stores with a table or set for nft to read back. nft
 * keeps comments there and, for sets, the byte order of keys and data and the `typeof`
 * expressions of the declaration; without them `nft list` would print our sets' integers in
 * the wrong byte order and our typeof maps as plain types. libnftnl's TLV format: a u8 type,
 * a u8 length, the value; u32 values in host byte order; nesting by value.
 */
import type { Expr, NftSet } from '../ir.js';
import { NftError } from '../errors.js';
import { ByteOrder, concatParts, specOfDef, typeofDatatype } from './datatypes.js';

/** NFTNL_UDATA_SET_* */
const SetUdata = {
  KEYBYTEORDER: 0,
  DATABYTEORDER: 1,
  KEY_TYPEOF: 3,
  DATA_TYPEOF: 4,
  DATA_INTERVAL: 6,
  COMMENT: 7,
} as const;
/** NFTNL_UDATA_TABLE_COMMENT */
const TABLE_COMMENT = 0;
/** NFTNL_UDATA_SET_TYPEOF_EXPR / _DATA */
const TYPEOF_EXPR = 0;
const TYPEOF_DATA = 1;

/** nft's expression type ids (enum expr_types) of what typeof declarations use. */
const ExprType = { payload: 7, meta: 9, concat: 13, numgen: 23 } as const;

/** nft's protocol descriptor ids and header field indexes, for payload expressions. */
const PROTO_DESC: Record<string, { id: number; fields: Record<string, number> }> = {
  th: { id: 11, fields: { sport: 1, dport: 2 } },
  ip: { id: 12, fields: { saddr: 11, daddr: 12 } },
  ip6: { id: 13, fields: { saddr: 8, daddr: 9 } },
};

const META_KEYS: Record<string, number> = { mark: 3, l4proto: 16 };

type Tlv = [type: number, value: Buffer];

function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0);
  return b;
}

function tlvs(list: Tlv[]): Buffer {
  const parts: Buffer[] = [];
  for (const [t, v] of list) {
    if (v.length > 255) throw NftError.invalid('userdata value too long');
    parts.push(Buffer.from([t, v.length]), v);
  }
  return Buffer.concat(parts);
}

/** The userdata of one typeof expression (its nft expression udata). */
function exprUdata(e: Expr): Tlv[] {
  if (typeof e === 'object' && e !== null) {
    if ('payload' in e) {
      const desc = PROTO_DESC[e.payload.protocol];
      const field = desc?.fields[e.payload.field];
      if (desc && field !== undefined)
        return [
          [TYPEOF_EXPR, u32(ExprType.payload)],
          [
            TYPEOF_DATA,
            tlvs([
              [0, u32(desc.id)],
              [1, u32(field)],
            ]),
          ],
        ];
    }
    if ('meta' in e && META_KEYS[e.meta.key] !== undefined)
      return [
        [TYPEOF_EXPR, u32(ExprType.meta)],
        [TYPEOF_DATA, tlvs([[0, u32(META_KEYS[e.meta.key]!)]])],
      ];
    if ('numgen' in e) {
      const { mode, mod, offset } = e.numgen;
      return [
        [TYPEOF_EXPR, u32(ExprType.numgen)],
        [
          TYPEOF_DATA,
          tlvs([
            [0, u32(mode === 'random' ? 1 : 0)],
            [1, u32(mod)],
            [2, u32(offset)],
          ]),
        ],
      ];
    }
  }
  throw NftError.invalid(`typeof expression ${JSON.stringify(e)} has no userdata encoding`);
}

/** A concatenation's udata: its fields' expressions, or none for plain datatypes. */
function concatUdata(fields: Expr[] | undefined): Buffer {
  const inner: Tlv[] = (fields ?? []).map((f, i) => [i, tlvs(exprUdata(f))]);
  return tlvs([
    [TYPEOF_EXPR, u32(ExprType.concat)],
    [TYPEOF_DATA, tlvs(inner)],
  ]);
}

/** The userdata nft stores with a set or map declaration. */
export function setUserdata(def: Omit<NftSet, 'elem'>): Buffer {
  const spec = specOfDef(def);
  const out: Tlv[] = [];
  const concatKey = spec.key.fields.length > 1;
  const keyOrder = concatKey ? ByteOrder.invalid : spec.key.fields[0]!.order;
  out.push([SetUdata.KEYBYTEORDER, u32(keyOrder)]);
  const isMap = def.map !== undefined;
  if (isMap) {
    const dataOrder =
      spec.verdict || (spec.data?.fields.length ?? 0) > 1 ? ByteOrder.invalid : spec.data!.fields[0]!.order;
    out.push([SetUdata.DATABYTEORDER, u32(dataOrder)]);
  }
  if (def.typeof) {
    // A lone typeof expression is written as itself, several as a concatenation.
    const parts = concatParts(def.typeof.key);
    parts.forEach((p) => typeofDatatype(p)); // refuse what we cannot describe
    out.push([SetUdata.KEY_TYPEOF, parts.length > 1 ? concatUdata(parts) : tlvs(exprUdata(parts[0]!))]);
    if (def.typeof.data !== undefined) {
      const dparts = concatParts(def.typeof.data);
      out.push([SetUdata.DATA_TYPEOF, dparts.length > 1 ? concatUdata(dparts) : tlvs(exprUdata(dparts[0]!))]);
    }
  } else {
    if (concatKey) out.push([SetUdata.KEY_TYPEOF, concatUdata(undefined)]);
    if (spec.data && spec.data.fields.length > 1) out.push([SetUdata.DATA_TYPEOF, concatUdata(undefined)]);
  }
  if (isMap) out.push([SetUdata.DATA_INTERVAL, u32(0)]);
  if (def.comment) out.push([SetUdata.COMMENT, Buffer.from(`${def.comment}\0`)]);
  return tlvs(out);
}

/** The userdata of a table: its comment. */
export function tableUserdata(comment: string | undefined): Buffer | undefined {
  return comment ? tlvs([[TABLE_COMMENT, Buffer.from(`${comment}\0`)]]) : undefined;
}
