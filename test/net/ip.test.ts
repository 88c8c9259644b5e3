import assert from 'node:assert/strict';
import {
  canonicalIP,
  cidrContains,
  formatCIDR,
  normalizeCIDRs,
  parseCIDR,
  parseIP,
} from '../../src/net/ip.js';

describe('IP addresses', () => {
  it('prints IPv6 as nft does (glibc inet_ntop)', () => {
    const cases: [string, string][] = [
      ['FD00:0:0:0:0:0:0:10', 'fd00::10'],
      ['2001:db8:0:1:0:0:0:1', '2001:db8:0:1::1'],
      ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], // first of two equal runs
      ['1:0:2:3:4:5:6:7', '1:0:2:3:4:5:6:7'], // a single zero group stays
      ['::', '::'],
      ['::ffff:1.2.3.4', '::ffff:1.2.3.4'],
      ['::102:304', '::1.2.3.4'], // IPv4-compatible, as glibc prints it
      ['::1', '::1'],
      ['::ffff', '::ffff'],
    ];
    for (const [input, want] of cases) assert.equal(canonicalIP(input), want, input);
  });

  it('refuses what is not an address', () => {
    for (const bad of ['010.0.0.1', '1.2.3', '256.1.1.1', 'fe80::1%eth0', 'x', '', '1.2.3.4/32'])
      assert.equal(parseIP(bad), undefined, bad);
  });

  it('parses CIDRs, clearing host bits, and refuses bad lengths', () => {
    assert.equal(formatCIDR(parseCIDR('10.244.1.5/16')!), '10.244.0.0/16');
    assert.equal(formatCIDR(parseCIDR('fd00::1/64')!), 'fd00::/64');
    for (const bad of ['10.0.0.0/33', '10.0.0.0/', '10.0.0.0/01', 'fd00::/129', '10.0.0.0'])
      assert.equal(parseCIDR(bad), undefined, bad);
  });

  it('tests containment within a version only', () => {
    const c = parseCIDR('10.0.0.0/8')!;
    assert.ok(cidrContains(c, parseIP('10.255.0.1')!));
    assert.ok(!cidrContains(c, parseIP('11.0.0.1')!));
    assert.ok(!cidrContains(parseCIDR('::/0')!, parseIP('10.0.0.1')!));
  });

  it('normalises prefix lists for interval sets: sorted, no prefix inside another', () => {
    const out = normalizeCIDRs(
      ['10.1.0.0/16', '10.0.0.0/8', '192.168.0.0/24', '10.0.0.0/8'].map((s) => parseCIDR(s)!),
    );
    assert.deepEqual(out.map(formatCIDR), ['10.0.0.0/8', '192.168.0.0/24']);
  });
});
