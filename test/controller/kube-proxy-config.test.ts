/**
 * kube-proxy's KubeProxyConfiguration as `nftproxy run --config`: kubeadm's ConfigMap as it
 * is, and a tuned one, mapped field by field, with what is ignored said.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadSettingsFile, resolveSettings } from '../../src/controller/settings.js';

const KUBEADM = fileURLToPath(new URL('../fixtures/kube-proxy/kubeadm-config.conf', import.meta.url));

async function load(text: string) {
  const dir = await mkdtemp(join(tmpdir(), 'nftproxy-kpc-'));
  try {
    await writeFile(join(dir, 'config.conf'), text);
    return await loadSettingsFile(join(dir, 'config.conf'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

describe('KubeProxyConfiguration as the config file', () => {
  it("takes kubeadm's kube-proxy ConfigMap as it is", async () => {
    const { settings, ignored } = await loadSettingsFile(KUBEADM);
    const s = resolveSettings(settings, {}, { NODE_NAME: 'node1' });
    assert.equal(s.proxy.nodeName, 'node1', 'hostnameOverride empty: NODE_NAME');
    assert.deepEqual(
      s.proxy.clusterCIDRs.map((c) => `${c.version}/${c.len}`),
      ['4/16', '6/56'],
    );
    assert.equal(s.kubeconfig, '/var/lib/kube-proxy/kubeconfig.conf');
    assert.equal(s.syncPeriodMs, 30_000, '0s: the default');
    assert.equal(s.healthzBindAddress, '0.0.0.0:10256');
    // What kube-proxy set on the node with these (unset) conntrack fields.
    assert.deepEqual(s.conntrack, {
      maxPerCore: 32768,
      min: 131072,
      tcpEstablishedTimeoutSeconds: 86400,
      tcpCloseWaitTimeoutSeconds: 3600,
    });
    assert.deepEqual(ignored, [`${KUBEADM}: bindAddress: no nftproxy equivalent`]);
  });

  it('maps a tuned configuration, and names each field it ignores', async () => {
    const { settings, ignored } = await load(`
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
hostnameOverride: worker-7
clusterCIDR: 10.244.0.0/16
nodePortAddresses: [primary]
healthzBindAddress: 0.0.0.0
metricsBindAddress: 0.0.0.0:10249
nftables: { masqueradeAll: true, syncPeriod: 1m0s, minSyncPeriod: 2s, masqueradeBit: 15 }
iptables: { syncPeriod: 5m }
conntrack: { maxPerCore: 0, tcpEstablishedTimeout: 2h0m0s, udpTimeout: 1m, tcpBeLiberal: true }
clientConnection: { kubeconfig: /etc/kp.conf, qps: 50 }
detectLocalMode: InterfaceNamePrefix
detectLocal: { interfaceNamePrefix: veth }
oomScoreAdj: -999
`);
    const s = resolveSettings(settings);
    assert.equal(s.proxy.nodeName, 'worker-7');
    assert.equal(s.proxy.nodePortPrimary, true);
    assert.equal(s.proxy.masqueradeAll, true);
    assert.equal(s.syncPeriodMs, 60_000, "the mode's own section first");
    assert.equal(s.minSyncIntervalMs, 2000);
    assert.equal(s.healthzBindAddress, '0.0.0.0:10256', 'an IP alone gets the default port');
    assert.equal(s.metricsBindAddress, '0.0.0.0:10249');
    assert.equal(s.kubeconfig, '/etc/kp.conf');
    assert.deepEqual([s.proxy.detectLocalMode, s.proxy.podInterface], ['InterfaceNamePrefix', 'veth*']);
    assert.deepEqual(s.conntrack, {
      maxPerCore: 0,
      min: 131072,
      tcpEstablishedTimeoutSeconds: 7200,
      tcpCloseWaitTimeoutSeconds: 3600,
      udpTimeoutSeconds: 60,
      tcpBeLiberal: true,
    });
    assert.deepEqual(
      ignored.map((i) => i.replace(/^[^:]+: /, '')),
      [
        'nftables.masqueradeBit: nftproxy marks with bit 14 (0x4000), as kube-proxy by default',
        'clientConnection.qps: client-node defaults are used',
        'oomScoreAdj: no nftproxy equivalent',
      ],
    );
  });

  it('says an IPVS mode is not taken as is', async () => {
    const { ignored } = await load(
      'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\nipvs: { scheduler: sh }\n',
    );
    assert.ok(
      ignored.some((i) => /mode: ipvs: nftproxy programs nftables; ProxyPolicy schedulers/.test(i)),
      ignored.join('\n'),
    );
    assert.ok(
      ignored.some((i) => /ipvs: no nftproxy equivalent/.test(i)),
      ignored.join('\n'),
    );
  });
});
