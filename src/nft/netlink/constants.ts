/**
 * The nf_tables netlink vocabulary nftproxy uses, from <linux/netfilter/nf_tables.h> and
 * <linux/netfilter/nfnetlink.h>. Only what the encoder and decoder need; names follow the
 * kernel's without their prefixes.
 */

/** nfnetlink subsystem of nf_tables: message types are `NFNL_SUBSYS_NFTABLES << 8 | msg`. */
export const NFNL_SUBSYS_NFTABLES = 10;
/** Batch delimiters (nfnetlink control messages). */
export const NFNL_MSG_BATCH_BEGIN = 0x10;
export const NFNL_MSG_BATCH_END = 0x11;
/** The multicast group nf_tables sends change notifications to. */
export const NFNLGRP_NFTABLES = 7;

/** nf_tables message types (NFT_MSG_*). */
export const Msg = {
  NEWTABLE: 0,
  GETTABLE: 1,
  DELTABLE: 2,
  NEWCHAIN: 3,
  GETCHAIN: 4,
  DELCHAIN: 5,
  NEWRULE: 6,
  GETRULE: 7,
  DELRULE: 8,
  NEWSET: 9,
  GETSET: 10,
  DELSET: 11,
  NEWSETELEM: 12,
  GETSETELEM: 13,
  DELSETELEM: 14,
  NEWGEN: 15,
  GETGEN: 16,
} as const;

/** The full netlink message type of an nf_tables message. */
export const msgType = (m: number): number => (NFNL_SUBSYS_NFTABLES << 8) | m;

/** Protocol families of tables (NFPROTO_*). */
export const NFPROTO = { ip: 2, ip6: 10 } as const;

export const TableAttr = { NAME: 1, FLAGS: 2, USE: 3, HANDLE: 4, USERDATA: 6 } as const;

export const ChainAttr = {
  TABLE: 1,
  HANDLE: 2,
  NAME: 3,
  HOOK: 4,
  POLICY: 5,
  USE: 6,
  TYPE: 7,
  COUNTERS: 8,
  FLAGS: 10,
  ID: 11,
  USERDATA: 12,
} as const;

export const HookAttr = { HOOKNUM: 1, PRIORITY: 2 } as const;

export const RuleAttr = {
  TABLE: 1,
  CHAIN: 2,
  HANDLE: 3,
  EXPRESSIONS: 4,
  POSITION: 6,
  USERDATA: 7,
  ID: 9,
} as const;

/** Nested lists (NFTA_LIST_ELEM) and expressions (NFTA_EXPR_*). */
export const LIST_ELEM = 1;
export const ExprAttr = { NAME: 1, DATA: 2 } as const;

export const SetAttr = {
  TABLE: 1,
  NAME: 2,
  FLAGS: 3,
  KEY_TYPE: 4,
  KEY_LEN: 5,
  DATA_TYPE: 6,
  DATA_LEN: 7,
  POLICY: 8,
  DESC: 9,
  ID: 10,
  TIMEOUT: 11,
  GC_INTERVAL: 12,
  USERDATA: 13,
  HANDLE: 16,
  EXPR: 17,
  EXPRESSIONS: 18,
} as const;

export const SetDescAttr = { SIZE: 1, CONCAT: 2 } as const;
export const SetFieldAttr = { LEN: 1 } as const;

/** NFT_SET_* flags. */
export const SetFlag = {
  ANONYMOUS: 0x1,
  CONSTANT: 0x2,
  INTERVAL: 0x4,
  MAP: 0x8,
  TIMEOUT: 0x10,
  EVAL: 0x20,
  OBJECT: 0x40,
  CONCAT: 0x80,
  EXPR: 0x100,
} as const;

export const SetElemListAttr = { TABLE: 1, SET: 2, ELEMENTS: 3, SET_ID: 4 } as const;

export const SetElemAttr = {
  KEY: 1,
  DATA: 2,
  FLAGS: 3,
  TIMEOUT: 4,
  EXPIRATION: 5,
  USERDATA: 6,
  EXPR: 7,
  KEY_END: 10,
  EXPRESSIONS: 11,
} as const;

export const SET_ELEM_INTERVAL_END = 0x1;

export const DataAttr = { VALUE: 1, VERDICT: 2 } as const;
export const VerdictAttr = { CODE: 1, CHAIN: 2 } as const;

/** Verdict codes: netfilter's NF_DROP/NF_ACCEPT and nf_tables' own (negative, as u32). */
export const Verdict = {
  drop: 0,
  accept: 1,
  continue: -1,
  break: -2,
  jump: -3,
  goto: -4,
  return: -5,
} as const;

/** The data type of verdict maps (NFT_DATA_VERDICT). */
export const NFT_DATA_VERDICT = 0xffffff00;

/** Netfilter hooks (NF_INET_*). */
export const Hook = { prerouting: 0, input: 1, forward: 2, output: 3, postrouting: 4 } as const;

/** Registers: the verdict register, the four 128-bit ones, and 32-bit ones from REG32_00. */
export const Reg = { VERDICT: 0, R1: 1, REG32_00: 8 } as const;

export const PayloadAttr = { DREG: 1, BASE: 2, OFFSET: 3, LEN: 4 } as const;
export const PayloadBase = { LL: 0, NETWORK: 1, TRANSPORT: 2 } as const;

export const MetaAttr = { DREG: 1, KEY: 2, SREG: 3 } as const;
export const MetaKey = { MARK: 3, IIFNAME: 6, L4PROTO: 16 } as const;

export const CmpAttr = { SREG: 1, OP: 2, DATA: 3 } as const;
export const CmpOp = { EQ: 0, NEQ: 1, LT: 2, LTE: 3, GT: 4, GTE: 5 } as const;

export const BitwiseAttr = { SREG: 1, DREG: 2, LEN: 3, MASK: 4, XOR: 5, OP: 6 } as const;
export const BITWISE_MASK_XOR = 0;

export const ByteorderAttr = { SREG: 1, DREG: 2, OP: 3, LEN: 4, SIZE: 5 } as const;
export const BYTEORDER_HTON = 1;

export const LookupAttr = { SET: 1, SREG: 2, DREG: 3, SET_ID: 4, FLAGS: 5 } as const;
export const LOOKUP_F_INV = 0x1;

export const ImmediateAttr = { DREG: 1, DATA: 2 } as const;

export const NatAttr = {
  TYPE: 1,
  FAMILY: 2,
  REG_ADDR_MIN: 3,
  REG_ADDR_MAX: 4,
  REG_PROTO_MIN: 5,
  FLAGS: 7,
} as const;
export const NatType = { SNAT: 0, DNAT: 1 } as const;

export const MasqAttr = { FLAGS: 1 } as const;
/** NF_NAT_RANGE_PROTO_RANDOM_FULLY and friends. */
export const NatFlag = { RANDOM: 0x4, PERSISTENT: 0x8, RANDOM_FULLY: 0x10 } as const;

export const RejectAttr = { TYPE: 1, ICMP_CODE: 2 } as const;
export const RejectType = { ICMP_UNREACH: 0, TCP_RST: 1, ICMPX_UNREACH: 2 } as const;

export const DynsetAttr = {
  SET_NAME: 1,
  SET_ID: 2,
  OP: 3,
  SREG_KEY: 4,
  SREG_DATA: 5,
  TIMEOUT: 6,
  FLAGS: 9,
} as const;
export const DynsetOp = { ADD: 0, UPDATE: 1, DELETE: 2 } as const;

export const NumgenAttr = { DREG: 1, MODULUS: 2, TYPE: 3, OFFSET: 4 } as const;
export const NumgenType = { inc: 0, random: 1 } as const;

export const HashAttr = { SREG: 1, DREG: 2, LEN: 3, MODULUS: 4, SEED: 5, OFFSET: 6, TYPE: 7 } as const;
export const HASH_JENKINS = 0;

export const FibAttr = { DREG: 1, RESULT: 2, FLAGS: 3 } as const;
export const FibResult = { OIF: 1, OIFNAME: 2, ADDRTYPE: 3 } as const;
export const FibFlag = { SADDR: 1, DADDR: 2, MARK: 4, IIF: 8, OIF: 16 } as const;

export const CtAttr = { DREG: 1, KEY: 2, DIRECTION: 3, SREG: 4 } as const;
export const CtKey = {
  state: 0,
  direction: 1,
  status: 2,
  mark: 3,
  l3proto: 7,
  protocol: 10,
  'proto-src': 11,
  'proto-dst': 12,
  'ip saddr': 19,
  'ip daddr': 20,
  'ip6 saddr': 21,
  'ip6 daddr': 22,
} as const;

export const CounterAttr = { BYTES: 1, PACKETS: 2 } as const;

export const GenAttr = { ID: 1, PROC_PID: 2, PROC_NAME: 3 } as const;
