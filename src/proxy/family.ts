/**
 * What differs between the `ip` and `ip6` tables.
 */
import { prefix, type Expr, type Family, type Stmt } from '../nft/ir.js';

/** Per-family vocabulary. */
export interface FamilyInfo {
  family: Family;
  version: 4 | 6;
  /** `ip` or `ip6`: the payload protocol of addresses. */
  l3: 'ip' | 'ip6';
  addrType: 'ipv4_addr' | 'ipv6_addr';
  loopback: Expr;
  reject: Stmt;
}

export const FAMILY_INFO: Record<Family, FamilyInfo> = {
  ip: {
    family: 'ip',
    version: 4,
    l3: 'ip',
    addrType: 'ipv4_addr',
    loopback: prefix('127.0.0.0', 8),
    reject: { reject: { type: 'icmp', expr: 'port-unreachable' } },
  },
  ip6: {
    family: 'ip6',
    version: 6,
    l3: 'ip6',
    addrType: 'ipv6_addr',
    loopback: '::1',
    reject: { reject: { type: 'icmpv6', expr: 'port-unreachable' } },
  },
};

/** nft protocol names of Kubernetes protocols. */
export const PROTO = { TCP: 'tcp', UDP: 'udp', SCTP: 'sctp' } as const;
