import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { health } from '../../src/controller/health.js';
import { parseDuration, readSettingsFile, resolveSettings } from '../../src/controller/settings.js';
import { ConfigError, parseProxyConfig } from '../../src/proxy/config.js';
import { formatCIDR } from '../../src/net/ip.js';

async function withFile(text: string, fn: (path: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'nftproxy-settings-'));
  try {
    await writeFile(join(dir, 'c.yaml'), text);
    await fn(join(dir, 'c.yaml'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function problems(fn: () => unknown): string[] {
  try {
    fn();
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  assert.fail('expected a ConfigError');
}

describe('settings', () => {
  it('parses durations', () => {
    assert.equal(parseDuration('30s'), 30_000);
    assert.equal(parseDuration('1h30m'), 5_400_000);
    assert.equal(parseDuration('100ms'), 100);
    for (const bad of ['30', 's', '1d', '-1s', '1 s']) assert.equal(parseDuration(bad), undefined, bad);
  });

  it('fills kube-proxy defaults, node name from NODE_NAME', () => {
    const s = resolveSettings({}, {}, { NODE_NAME: 'n7' });
    assert.equal(s.proxy.nodeName, 'n7');
    assert.equal(s.syncPeriodMs, 30_000);
    assert.equal(s.fullSyncPeriodMs, 3_600_000);
    assert.equal(s.healthzBindAddress, '0.0.0.0:10256');
  });

  it('lets flags override the file, and the file the environment', async () => {
    await withFile('nodeName: from-file\nsyncPeriod: 10s\nclusterCIDRs: [10.0.0.0/8]\n', async (path) => {
      const file = await readSettingsFile(path);
      const s = resolveSettings({ syncPeriod: '5s' }, file, { NODE_NAME: 'from-env' });
      assert.equal(s.proxy.nodeName, 'from-file');
      assert.equal(s.syncPeriodMs, 5000);
      assert.equal(s.proxy.clusterCIDRs.length, 1);
    });
  });

  it('rejects unknown keys and wrong types in the file, naming each', async () => {
    await withFile('nodename: x\nmasqueradeAll: "yes"\nclusterCIDRs: 10.0.0.0/8\n', async (path) => {
      await assert.rejects(readSettingsFile(path), (e: unknown) => {
        assert.ok(e instanceof ConfigError);
        assert.equal(e.problems.length, 3);
        assert.match(e.problems[0]!, /unknown setting "nodename"/);
        assert.match(e.problems[1]!, /masqueradeAll must be a boolean/);
        assert.match(e.problems[2]!, /clusterCIDRs must be a list of strings/);
        return true;
      });
    });
  });

  it('refuses durations timers cannot hold, and a sync period that would spin', () => {
    assert.match(
      problems(() => resolveSettings({ nodeName: 'n', fullSyncPeriod: '720h' }))[0]!,
      /fullSyncPeriod: 720h is outside/,
    );
    assert.match(
      problems(() => resolveSettings({ nodeName: 'n', syncPeriod: '1ms' }))[0]!,
      /syncPeriod: 1ms is outside/,
    );
    assert.equal(
      resolveSettings({ nodeName: 'n', fullSyncPeriod: '0s' }).fullSyncPeriodMs,
      0,
      '0 turns it off',
    );
  });

  it('takes the API backoff cap and probe interval, from flags or the file', async () => {
    const d = resolveSettings({ nodeName: 'n' });
    assert.equal(d.apiBackoffMaxMs, 30_000);
    assert.equal(d.apiProbeIntervalMs, 1000);
    await withFile('apiBackoffMax: 2m\napiProbeInterval: 0s\n', async (path) => {
      const s = resolveSettings({ nodeName: 'n', apiBackoffMax: '10s' }, await readSettingsFile(path));
      assert.equal(s.apiBackoffMaxMs, 10_000);
      assert.equal(s.apiProbeIntervalMs, 0, '0 turns probing off');
    });
    assert.match(
      problems(() => resolveSettings({ nodeName: 'n', apiBackoffMax: '500ms' }))[0]!,
      /apiBackoffMax: 500ms is outside 1000 ms/,
    );
    assert.match(
      problems(() => resolveSettings({ nodeName: 'n', apiProbeInterval: 'often' }))[0]!,
      /apiProbeInterval: not a duration/,
    );
  });

  it('lists every invalid value at once', () => {
    const p = problems(() =>
      resolveSettings({
        nodeName: 'n',
        syncPeriod: 'soon',
        healthzBindAddress: 'nope',
        logLevel: 'loud',
        clusterCIDRs: ['x'],
        manifests: 'd',
        kubeconfig: 'k',
      }),
    );
    assert.equal(p.length, 5, p.join('\n'));
    assert.ok(p.some((x) => /syncPeriod: not a duration/.test(x)));
    assert.ok(p.some((x) => /healthzBindAddress: want host:port/.test(x)));
    assert.ok(p.some((x) => /logLevel/.test(x)));
    assert.ok(p.some((x) => /cluster CIDR: not a valid CIDR: "x"/.test(x)));
    assert.ok(p.some((x) => /choose one source/.test(x)));
  });
});

describe('nodePortAddresses', () => {
  const parse = (nodePortAddresses: string[]) => parseProxyConfig({ nodeName: 'n', nodePortAddresses });

  it('takes CIDRs, primary, and all (every local address, as when none is given)', () => {
    const c = parse(['192.168.0.0/16', 'primary']);
    assert.deepEqual(c.nodePortCIDRs.map(formatCIDR), ['192.168.0.0/16']);
    assert.equal(c.nodePortPrimary, true);
    const all = parse(['all']);
    assert.deepEqual([all.nodePortCIDRs, all.nodePortPrimary], [[], false]);
    assert.deepEqual(all, parse([]));
  });

  it('refuses loopback CIDRs and all with anything else, saying why', () => {
    const p = problems(() => parse(['127.0.0.0/8', '::1/128', '127.0.0.1/32', 'all', 'primary']));
    assert.deepEqual(p, [
      'nodeport address: "127.0.0.0/8" is loopback, where NodePorts never answer (as in kube-proxy); use a node address range, primary or all',
      'nodeport address: "::1/128" is loopback, where NodePorts never answer (as in kube-proxy); use a node address range, primary or all',
      'nodeport address: "127.0.0.1/32" is loopback, where NodePorts never answer (as in kube-proxy); use a node address range, primary or all',
      'nodeport address: all means every local address; it cannot be combined with ["127.0.0.0/8","::1/128","127.0.0.1/32","primary"]',
    ]);
    // A range that merely includes loopback is fine: loopback itself never answers.
    assert.deepEqual(parse(['0.0.0.0/0']).nodePortCIDRs.map(formatCIDR), ['0.0.0.0/0']);
  });
});

describe('health', () => {
  it('is unhealthy before the first sync and while a change waits too long, like kube-proxy', () => {
    assert.equal(health({ lastSuccessAt: undefined, pendingSince: undefined }, 60_000, 1000).healthy, false);
    assert.equal(
      health({ lastSuccessAt: 1000, pendingSince: undefined }, 60_000, 10_000_000).healthy,
      true,
      'quiet is healthy',
    );
    assert.equal(health({ lastSuccessAt: 1000, pendingSince: 2000 }, 60_000, 50_000).healthy, true);
    const h = health({ lastSuccessAt: 1000, pendingSince: 2000 }, 60_000, 70_000);
    assert.equal(h.healthy, false);
    assert.match(String(h.body.reasons), /waited 68 s/);
  });
});
