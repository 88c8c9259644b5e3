/**
 * @kernel kube-proxy's conntrack sysctls, set in a test network namespace (never the root
 * one): timeouts written and read back, nf_conntrack_max refused there (it is global) with a
 * warning and without stopping anything, values already right left alone.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { applyConntrackSettings, sysctlAccess } from '../../src/controller/sysctl.js';
import { resolveSettings } from '../../src/controller/settings.js';
import { capturingLogger } from '../support/log.js';
import { requireKernel, Netns } from '../support/netns.js';

const rootValue = (key: string) => readFileSync(`/proc/sys/net/netfilter/${key}`, 'utf8').trim();

describe('@kernel conntrack sysctls in a network namespace', function () {
  this.timeout(30_000);
  let ns: Netns | undefined;

  before(function () {
    requireKernel(this);
  });

  afterEach(async () => {
    await ns?.delete();
    ns = undefined;
  });

  it("sets kube-proxy's conntrack settings in the namespace, and only there", async () => {
    ns = await Netns.create('sysctl');
    const before = {
      established: rootValue('nf_conntrack_tcp_timeout_established'),
      max: rootValue('nf_conntrack_max'),
    };
    const settings = resolveSettings({
      nodeName: 'n1',
      conntrackMaxPerCore: 1_000_000,
      conntrackMin: 131072,
      conntrackTCPEstablishedTimeout: '24h',
      conntrackTCPCloseWaitTimeout: '1h',
      conntrackTCPBeLiberal: true,
      conntrackUDPTimeout: '45s',
      conntrackUDPStreamTimeout: '3m',
    });
    const log = capturingLogger();
    const access = sysctlAccess(ns.name);
    const changes = await applyConntrackSettings(settings.conntrack, access, 2, log);
    assert.deepEqual(
      changes.map((c) => `${c.key}=${c.to}`),
      [
        'net.netfilter.nf_conntrack_tcp_timeout_established=86400',
        'net.netfilter.nf_conntrack_tcp_timeout_close_wait=3600',
        'net.netfilter.nf_conntrack_udp_timeout=45',
        'net.netfilter.nf_conntrack_udp_timeout_stream=180',
        'net.netfilter.nf_conntrack_tcp_be_liberal=1',
      ],
    );
    for (const c of changes) assert.equal(await access.read(c.key), c.to, c.key);
    assert.ok(
      log.lines.some((l) => l.level === 'warn' && l.msg.startsWith('cannot raise nf_conntrack_max')),
      JSON.stringify(log.lines),
    );
    // Again: nothing to change.
    assert.deepEqual(await applyConntrackSettings(settings.conntrack, access, 2), []);
    // The root namespace is untouched.
    assert.deepEqual(
      { established: rootValue('nf_conntrack_tcp_timeout_established'), max: rootValue('nf_conntrack_max') },
      before,
    );
  });
});

describe('conntrack settings', () => {
  it('are all optional: none by default', () => {
    assert.deepEqual(resolveSettings({ nodeName: 'n1' }).conntrack, {});
  });

  it('refuse a timeout not in whole seconds and a negative count', () => {
    assert.throws(
      () => resolveSettings({ nodeName: 'n1', conntrackUDPTimeout: '1500ms', conntrackMin: -1 }),
      (e: Error) =>
        /conntrackMin: want a whole number from 0, got -1/.test(e.message) &&
        /conntrackUDPTimeout: want a duration in whole seconds/.test(e.message),
    );
  });

  it('never lowers nf_conntrack_max, and raises it to CPUs x per-core, at least min', async () => {
    const values = new Map([['net.netfilter.nf_conntrack_max', '262144']]);
    const access = {
      read: async (k: string) => values.get(k) ?? '0',
      write: async (k: string, v: string) => void values.set(k, v),
    };
    assert.deepEqual(await applyConntrackSettings({ maxPerCore: 32768, min: 131072 }, access, 4), []);
    const raised = await applyConntrackSettings({ maxPerCore: 32768, min: 131072 }, access, 16);
    assert.deepEqual(raised, [{ key: 'net.netfilter.nf_conntrack_max', from: '262144', to: '524288' }]);
    values.set('net.netfilter.nf_conntrack_max', '1000');
    assert.equal((await applyConntrackSettings({ maxPerCore: 10, min: 131072 }, access, 2))[0]!.to, '131072');
  });
});
