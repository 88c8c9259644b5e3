/**
 * The netlink encoder and decoder without a kernel: element lines survive encoding and
 * decoding for every layout nftproxy's sets use, intervals come back as the prefixes and
 * ranges nft prints, batches split where the 16-bit nest length demands, bad lines are
 * refused with the line quoted, and canonical keys ignore only what the kernel may add.
 */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { NftError } from '../../src/nft/errors.js';
import type { NftSet, Transaction } from '../../src/nft/ir.js';
import { attrMap, messageAttrs, parseMessages } from '../../src/nft/netlink/attr.js';
import { BatchEncoder } from '../../src/nft/netlink/batch.js';
import { Msg, SetElemListAttr } from '../../src/nft/netlink/constants.js';
import { specOfDef } from '../../src/nft/netlink/datatypes.js';
import { elementLines, setKey, specOfSetAttrs } from '../../src/nft/netlink/decode.js';
import { formatIP } from '../../src/net/ip.js';

const def = (name: string, type: string[] | string, extra: Partial<NftSet> = {}): NftSet => ({
  family: 'ip6',
  table: 't',
  name,
  type,
  ...extra,
});

/** Encodes `lines` as the elements of a new set, then reads them back as a dump would be. */
function roundTrip(d: NftSet, lines: string[]): string[] {
  const tx: Transaction = {
    commands: [
      { add: { table: { family: d.family, name: 't' } } },
      { add: d.map === undefined ? { set: d } : { map: d } },
      { add: { element: { family: d.family, table: 't', name: d.name, lines: [lines.join('\n')] } } },
    ],
  };
  const msgs = parseMessages(BatchEncoder.encode(tx, { spec: () => undefined }, 1).buf);
  const setMsg = msgs.find((m) => (m.type & 0xff) === Msg.NEWSET)!;
  // The layout as the kernel would report it, from the declaration's own attributes.
  const spec = specOfSetAttrs(attrMap(messageAttrs(setMsg)));
  assert.deepEqual(spec, specOfDef(d), 'the declaration reads back as the layout it was written from');
  const payloads = msgs
    .filter((m) => (m.type & 0xff) === Msg.NEWSETELEM)
    .map((m) => Buffer.from(messageAttrs(m)));
  return elementLines(spec, payloads);
}

const v4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((b) => b.join('.'));
const v6 = fc.uint8Array({ minLength: 16, maxLength: 16 }).map((bytes) => formatIP({ version: 6, bytes }));
const port = fc.integer({ min: 0, max: 65535 });
const proto = fc.constantFrom('tcp', 'udp', 'sctp');
const slot = fc.oneof(fc.nat(16), fc.integer({ min: 65536, max: 65536 + 16 }), fc.nat(0xffffffff));
const chain = fc.constantFrom('pick-random-2', 'nodeport-pick-hash-251', 'reject-chain');

describe('netlink element lines', () => {
  it('survive encoding and decoding for every layout of the ruleset', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.tuple(v6, proto, port, slot, v6, port), {
          minLength: 1,
          maxLength: 40,
          selector: (t) => t.slice(0, 4).join(),
        }),
        fc.uniqueArray(
          fc.tuple(
            proto,
            port,
            fc.oneof(
              chain.map((c) => `goto ${c}`),
              fc.constant('drop'),
            ),
          ),
          {
            minLength: 1,
            maxLength: 20,
            selector: (t) => t.slice(0, 2).join(),
          },
        ),
        fc.uniqueArray(fc.tuple(v4, v4), { minLength: 1, maxLength: 20, selector: (t) => t.join() }),
        (backends, verdicts, pairs) => {
          const b = backends.map(([a, p, n, s, ip, ep]) => `${a} . ${p} . ${n} . ${s} : ${ip} . ${ep}`);
          const backendsDef = def('backends', ['ipv6_addr', 'inet_proto', 'inet_service', 'integer'], {
            map: 'ipv6_addr . inet_service',
          });
          assert.deepEqual(roundTrip(backendsDef, b).sort(), [...b].sort());
          const v = verdicts.map(([p, n, verdict]) => `${p} . ${n} : ${verdict}`);
          assert.deepEqual(
            roundTrip(def('nodeports', ['inet_proto', 'inet_service'], { map: 'verdict' }), v).sort(),
            [...v].sort(),
          );
          const h = pairs.map(([x, y]) => `${x} . ${y}`);
          assert.deepEqual(
            roundTrip({ ...def('hairpin', ['ipv4_addr', 'ipv4_addr']), family: 'ip' }, h).sort(),
            [...h].sort(),
          );
        },
      ),
      { numRuns: 60 },
    );
  });

  it('bring intervals back as nft prints them: prefixes, single addresses, ranges, the open top', () => {
    const cidrs = def('cidrs', 'ipv4_addr', { family: 'ip', flags: ['interval'] });
    const lines = ['10.0.0.0/8', '11.0.0.1', '11.0.0.3-11.0.0.9', '192.168.0.0/16', '255.255.255.0/24'];
    assert.deepEqual(roundTrip(cidrs, lines), lines);
    assert.deepEqual(
      roundTrip(cidrs, ['0.0.0.0/1']),
      ['0.0.0.0/1'],
      'an interval from zero needs no zero end',
    );
    const six = def('cidrs6', 'ipv6_addr', { flags: ['interval'] });
    assert.deepEqual(roundTrip(six, ['fd00::/64', 'fd01::1', '::/0'].slice(0, 2)), ['fd00::/64', 'fd01::1']);
    const allow = def('allow', ['ipv6_addr', 'inet_proto', 'inet_service', 'ipv6_addr'], {
      flags: ['interval'],
    });
    const fw = [
      'fd00::1 . tcp . 443 . 2001:db8::/32',
      'fd00::1 . udp . 53 . fd00::5',
      'fd00::2 . tcp . 80 . fd00::1-fd00::9',
    ];
    assert.deepEqual(roundTrip(allow, fw).sort(), [...fw].sort());
  });

  it('splits a long list into messages whose element nests fit 16 bits', () => {
    const d = def('hairpin', ['ipv6_addr', 'ipv6_addr']);
    const lines = Array.from({ length: 5000 }, (_, i) => `fd00::${i.toString(16)} . fd00::${i.toString(16)}`);
    const tx: Transaction = {
      commands: [{ add: { element: { family: 'ip6', table: 't', name: 'hairpin', lines } } }],
    };
    const msgs = parseMessages(BatchEncoder.encode(tx, { spec: () => specOfDef(d) }, 1).buf).filter(
      (m) => (m.type & 0xff) === Msg.NEWSETELEM,
    );
    assert.ok(msgs.length >= 4, `${msgs.length} messages`);
    let total = 0;
    for (const m of msgs) {
      const list = attrMap(messageAttrs(m)).get(SetElemListAttr.ELEMENTS)!;
      assert.ok(list.data.length + 4 <= 0xffff, `a nest of ${list.data.length} bytes`);
      total += elementLines(specOfDef(d), [Buffer.from(messageAttrs(m))]).length;
    }
    assert.equal(total, 5000);
  });

  it('refuses a line that does not fit its set, quoting it', () => {
    const d = def('m', ['ipv4_addr', 'inet_service'], { family: 'ip', map: 'verdict' });
    for (const bad of [
      '10.0.0.1 . 80',
      '10.0.0.300 . 80 : drop',
      '10.0.0.1 . 70000 : drop',
      '10.0.0.1 . 80 : maybe',
      'x . 80 : drop',
    ]) {
      const tx: Transaction = {
        commands: [{ add: { element: { family: 'ip', table: 't', name: 'm', lines: [bad] } } }],
      };
      assert.throws(
        () => BatchEncoder.encode(tx, { spec: () => specOfDef(d) }, 1),
        (e: unknown) =>
          e instanceof NftError &&
          e.kind === 'invalid' &&
          e.message.includes(JSON.stringify(bad).slice(1, 8)),
        bad,
      );
    }
  });

  it('tells set declarations apart by what the kernel keeps: flags, layout, size, userdata', () => {
    const key = (d: NftSet) => {
      const tx: Transaction = { commands: [{ add: d.map === undefined ? { set: d } : { map: d } }] };
      const m = parseMessages(BatchEncoder.encode(tx, { spec: () => undefined }, 1).buf)[1]!;
      return setKey(attrMap(messageAttrs(m)));
    };
    const base = def('s', ['ipv4_addr', 'inet_service'], { family: 'ip' });
    assert.equal(key(base), key({ ...base }));
    assert.notEqual(key(base), key({ ...base, flags: ['interval'] }));
    assert.notEqual(key(base), key({ ...base, size: 100 }));
    assert.notEqual(key(base), key({ ...base, type: ['ipv4_addr', 'inet_proto'] }));
    assert.notEqual(key(base), key({ ...base, comment: 'x' }));
    assert.notEqual(key(base), key({ ...base, stmt: [{ counter: null }] }));
  });
});
