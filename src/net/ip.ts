/**
 * IP addresses and CIDRs: strict parsing and the canonical text form nft prints, so that
 * what we write and what the kernel lists compare equal.
 */
import { isIPv4, isIPv6 } from 'node:net';

/** 4 for IPv4, 6 for IPv6. */
export type IPVersion = 4 | 6;

/** A parsed address: version and bytes (4 or 16). */
export interface IP {
  version: IPVersion;
  bytes: Uint8Array;
}

/** A parsed prefix, host bits cleared. */
export interface CIDR {
  version: IPVersion;
  bytes: Uint8Array;
  len: number;
}

function parseV4(s: string): Uint8Array | undefined {
  // node:net accepts only plain dotted quads; we also refuse leading zeros (octal ambiguity),
  // as Kubernetes validation does.
  if (!isIPv4(s) || s.split('.').some((p) => p.length > 1 && p.startsWith('0'))) return undefined;
  return Uint8Array.from(s.split('.').map(Number));
}

function parseV6(s: string): Uint8Array | undefined {
  if (!isIPv6(s) || s.includes('%')) return undefined;
  let text = s;
  if (text.includes('.')) {
    // An embedded IPv4 tail (`::ffff:1.2.3.4`) becomes the last two groups.
    const i = text.lastIndexOf(':');
    const v4 = parseV4(text.slice(i + 1));
    if (!v4) return undefined;
    const hi = ((v4[0]! << 8) | v4[1]!).toString(16);
    const lo = ((v4[2]! << 8) | v4[3]!).toString(16);
    text = `${text.slice(0, i + 1)}${hi}:${lo}`;
  }
  const groups = (part: string) => (part === '' ? [] : part.split(':').map((g) => parseInt(g, 16)));
  const [head, rest] = text.split('::') as [string, string | undefined];
  const h = groups(head);
  const words =
    rest === undefined
      ? h
      : [...h, ...new Array<number>(8 - h.length - groups(rest).length).fill(0), ...groups(rest)];
  if (words.length !== 8) return undefined;
  const b = new Uint8Array(16);
  words.forEach((w, i) => {
    b[2 * i] = w >> 8;
    b[2 * i + 1] = w & 0xff;
  });
  return b;
}

/** Parses an IPv4 or IPv6 address; undefined if it is not one. */
export function parseIP(s: string): IP | undefined {
  const v4 = parseV4(s);
  if (v4) return { version: 4, bytes: v4 };
  const v6 = parseV6(s);
  if (v6) return { version: 6, bytes: v6 };
  return undefined;
}

/**
 * The IP version of an address already validated (canonical form): no parsing, for hot
 * paths. Use `ipVersion` for untrusted text.
 */
export function versionOf(canonical: string): IPVersion {
  return canonical.includes(':') ? 6 : 4;
}

/** The IP version of a valid address, or undefined. */
export function ipVersion(s: string): IPVersion | undefined {
  return parseIP(s)?.version;
}

/** Formats bytes as nft prints them (IPv6 as glibc inet_ntop: longest zero run of 2+ groups). */
export function formatIP(ip: IP): string {
  const b = ip.bytes;
  if (ip.version === 4) return Array.from(b).join('.');
  const w = Array.from({ length: 8 }, (_, i) => (b[2 * i]! << 8) | b[2 * i + 1]!);
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (w[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  // glibc writes IPv4-compatible (::a.b.c.d) and IPv4-mapped (::ffff:a.b.c.d) addresses
  // with a dotted tail.
  if (best === 0 && (bestLen === 6 || (bestLen === 5 && w[5] === 0xffff))) {
    return `::${bestLen === 5 ? 'ffff:' : ''}${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  }
  const hexs = w.map((x) => x.toString(16));
  if (bestLen < 2) return hexs.join(':');
  return `${hexs.slice(0, best).join(':')}::${hexs.slice(best + bestLen).join(':')}`;
}

/** The canonical text of an address, or undefined if `s` is not one. */
export function canonicalIP(s: string): string | undefined {
  const ip = parseIP(s);
  return ip && formatIP(ip);
}

/** Parses `addr/len`; host bits are cleared. Undefined if invalid. */
export function parseCIDR(s: string): CIDR | undefined {
  const slash = s.indexOf('/');
  if (slash < 0) return undefined;
  const ip = parseIP(s.slice(0, slash));
  const lenText = s.slice(slash + 1);
  if (!ip || !/^(0|[1-9]\d{0,2})$/.test(lenText)) return undefined;
  const len = Number(lenText);
  if (len > ip.bytes.length * 8) return undefined;
  const bytes = Uint8Array.from(ip.bytes);
  for (let bit = len; bit < bytes.length * 8; bit++) bytes[bit >> 3]! &= ~(0x80 >> (bit & 7));
  return { version: ip.version, bytes, len };
}

/** `addr/len` in canonical form. */
export function formatCIDR(c: CIDR): string {
  return `${formatIP(c)}/${c.len}`;
}

/** Whether `ip` lies inside `cidr`. */
export function cidrContains(cidr: CIDR, ip: IP): boolean {
  if (cidr.version !== ip.version) return false;
  for (let bit = 0; bit < cidr.len; bit++) {
    const mask = 0x80 >> (bit & 7);
    if ((cidr.bytes[bit >> 3]! & mask) !== (ip.bytes[bit >> 3]! & mask)) return false;
  }
  return true;
}

/** `10.0.0.1:80`, or `[fd00::1]:80` for IPv6 (a canonical address). */
export function formatHostPort(addr: string, port: number): string {
  return addr.includes(':') ? `[${addr}]:${port}` : `${addr}:${port}`;
}

/** Orders addresses: IPv4 before IPv6, then numerically. */
export function compareIP(a: IP, b: IP): number {
  if (a.version !== b.version) return a.version - b.version;
  for (let i = 0; i < a.bytes.length; i++) if (a.bytes[i] !== b.bytes[i]) return a.bytes[i]! - b.bytes[i]!;
  return 0;
}

/**
 * Reduces a list of prefixes of one version to a sorted list without overlaps (a prefix
 * inside another is dropped), which is what an nft interval set accepts.
 */
export function normalizeCIDRs(cidrs: CIDR[]): CIDR[] {
  const sorted = [...cidrs].sort((a, b) => compareIP(a, b) || a.len - b.len);
  const out: CIDR[] = [];
  for (const c of sorted) {
    if (out.some((o) => o.version === c.version && o.len <= c.len && cidrContains(o, c))) continue;
    out.push(c);
  }
  return out;
}

/**
 * The addresses in both lists of prefixes (of any versions), as prefixes: two prefixes
 * overlap only when one contains the other, and then the narrower is their intersection.
 */
export function intersectCIDRs(a: CIDR[], b: CIDR[]): CIDR[] {
  const out: CIDR[] = [];
  for (const x of a) {
    for (const y of b) {
      if (x.version !== y.version) continue;
      if (x.len <= y.len && cidrContains(x, y)) out.push(y);
      else if (y.len < x.len && cidrContains(y, x)) out.push(x);
    }
  }
  return normalizeCIDRs(out);
}
