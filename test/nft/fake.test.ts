import assert from 'node:assert/strict';
import { FakeBackend } from '../../src/nft/fake.js';
import { NftError, NftErrorKind } from '../../src/nft/errors.js';
import type { Command } from '../../src/nft/ir.js';

const T = { family: 'ip', name: 't' } as const;
const chain = (name: string) => ({ family: 'ip' as const, table: 't', name });
const vmapDef = {
  family: 'ip' as const,
  table: 't',
  name: 'm',
  type: ['ipv4_addr', 'inet_service'],
  map: 'verdict',
};
const el = (addr: string, port: number, target: string) => ({
  element: {
    family: 'ip' as const,
    table: 't',
    name: 'm',
    lines: [`${addr} . ${port} : goto ${target}`],
  },
});

async function base(): Promise<FakeBackend> {
  const f = new FakeBackend();
  await f.apply({
    commands: [
      { add: { table: T } },
      { add: { chain: chain('a') } },
      { add: { chain: chain('b') } },
      { add: { map: vmapDef } },
      { add: el('10.0.0.1', 80, 'a') },
    ],
  });
  return f;
}

async function rejects(f: FakeBackend, commands: Command[], kind: string): Promise<void> {
  const before = JSON.stringify([...(await f.listTable('ip', 't'))!.sets.get('m')!.elems.keys()]);
  await assert.rejects(f.apply({ commands }), (e: unknown) => e instanceof NftError && e.kind === kind);
  const after = JSON.stringify([...(await f.listTable('ip', 't'))!.sets.get('m')!.elems.keys()]);
  assert.equal(after, before, 'a failed transaction changes nothing');
}

describe('fake nft backend', () => {
  it('applies transactions', async () => {
    const f = await base();
    assert.equal((await f.listTable('ip', 't'))!.sets.get('m')!.elems.size, 1);
    assert.equal(await f.listTable('ip6', 't'), undefined);
  });

  it('is atomic: a late failure undoes earlier commands of the same transaction', async () => {
    const f = await base();
    await rejects(
      f,
      [{ add: el('10.0.0.2', 80, 'a') }, { delete: el('10.0.0.9', 80, 'a') }],
      NftErrorKind.NotFound,
    );
    assert.equal((await f.listTable('ip', 't'))!.sets.get('m')!.elems.size, 1);
  });

  it('refuses a map element that exists with other data (EEXIST), accepts an identical one', async () => {
    const f = await base();
    await rejects(f, [{ add: el('10.0.0.1', 80, 'b') }], NftErrorKind.Exists);
    await f.apply({ commands: [{ add: el('10.0.0.1', 80, 'a') }] });
  });

  it('refuses to delete a chain a map element still points at (EBUSY)', async () => {
    const f = await base();
    await rejects(f, [{ delete: { chain: chain('a') } }], NftErrorKind.Busy);
    await f.apply({ commands: [{ delete: el('10.0.0.1', 80, 'a') }, { delete: { chain: chain('a') } }] });
  });

  it('refuses elements that point at missing chains or have the wrong type', async () => {
    const f = await base();
    await rejects(f, [{ add: el('10.0.0.2', 80, 'nope') }], NftErrorKind.NotFound);
    await rejects(f, [{ add: el('fd00::1', 80, 'a') }], NftErrorKind.Invalid);
    await rejects(f, [{ add: el('10.0.0.2', 70000, 'a') }], NftErrorKind.Invalid);
  });

  it('refuses overlapping elements in an interval set, as the kernel does', async () => {
    const f = new FakeBackend();
    const set = { family: 'ip' as const, table: 't', name: 'cidrs', type: 'ipv4_addr', flags: ['interval'] };
    const add = (lines: string[]): Command => ({
      add: { element: { family: 'ip' as const, table: 't', name: 'cidrs', lines } },
    });
    await f.apply({ commands: [{ add: { table: T } }, { add: { set } }, add(['10.0.0.0/8'])] });
    await assert.rejects(
      f.apply({ commands: [add(['10.0.0.5'])] }),
      (e: unknown) => e instanceof NftError && e.kind === NftErrorKind.Exists,
    );
    await f.apply({ commands: [add(['10.0.0.0/8', '11.0.0.1'])] });
    const inline = { ...set, name: 'c2', elem: [{ prefix: { addr: '10.0.0.0', len: 8 } }, '10.1.1.1'] };
    await assert.rejects(f.apply({ commands: [{ add: { set: inline } }] }), NftError);
  });

  it('refuses rules that refer to missing sets or chains', async () => {
    const f = await base();
    const rule = (expr: unknown[]) =>
      ({ add: { rule: { family: 'ip', table: 't', chain: 'a', expr } } }) as Command;
    await assert.rejects(
      f.apply({
        commands: [
          rule([{ vmap: { key: { payload: { protocol: 'ip', field: 'daddr' } }, data: '@missing' } }]),
        ],
      }),
      NftError,
    );
    await assert.rejects(f.apply({ commands: [rule([{ jump: { target: 'missing' } }])] }), NftError);
  });

  it('fails on demand, and records every attempt', async () => {
    const f = await base();
    f.injectFailure = () => new NftError(NftErrorKind.Failed, 'injected');
    await assert.rejects(f.apply({ commands: [{ add: el('10.0.0.3', 80, 'a') }] }), /injected/);
    assert.equal(f.applied.length, 2);
    assert.equal((await f.listTable('ip', 't'))!.sets.get('m')!.elems.size, 1);
  });
});
