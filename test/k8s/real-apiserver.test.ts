/**
 * The operator against a real kube-apiserver (v1.20.2 with etcd, test/support/
 * kube-apiserver.ts): programming a node namespace through an outage, with traffic from a
 * client pod (@kernel); and optional APIs the server lacks or RBAC refuses.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { sourceFor } from '../../src/cli/operate.js';
import { ApiSource } from '../../src/k8s/api-source.js';
import { Operator } from '../../src/controller/operator.js';
import { resolveSettings } from '../../src/controller/settings.js';
import { NetlinkBackend } from '../../src/nft/netlink/backend.js';
import { FakeBackend } from '../../src/nft/fake.js';
import { RealApiServer, requireRealApiServer } from '../support/kube-apiserver.js';
import { kustomizeBuild } from '../support/kustomize.js';
import { capturingLogger } from '../support/log.js';
import {
  createTopology,
  requireKernel,
  probeFor,
  startEchoServer,
  tally,
  type Pod,
  type Topology,
} from '../support/netns.js';

const CLUSTER_IP = '10.96.0.10';

const service = {
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name: 'web', namespace: 'default' },
  spec: { clusterIP: CLUSTER_IP, ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }] },
};
const slice = (pods: Pod[]) => ({
  apiVersion: 'discovery.k8s.io/v1',
  kind: 'EndpointSlice',
  metadata: { name: 'web-1', namespace: 'default', labels: { 'kubernetes.io/service-name': 'web' } },
  addressType: 'IPv4',
  ports: [{ port: 8080, protocol: 'TCP' }],
  endpoints: pods.map((p) => ({ addresses: [p.ip], conditions: { ready: true } })),
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<number> {
  const start = Date.now();
  while (!(await check())) {
    if (Date.now() - start > timeoutMs) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await sleep(50);
  }
  return Date.now() - start;
}

describe('@kernel real kube-apiserver: watches resume after an outage', function () {
  this.timeout(300_000);

  before(function () {
    requireRealApiServer(this);
    requireKernel(this);
  });

  it('after a 76 s outage under traffic, a change made once the server answers is programmed within 5 s', async () => {
    let api: RealApiServer | undefined;
    let topo: Topology | undefined;
    let op: Operator | undefined;
    let nft: NetlinkBackend | undefined;
    const stops: (() => Promise<void>)[] = [];
    try {
      api = await RealApiServer.start();
      topo = await createTopology(2);
      const [a, b] = topo.pods as [Pod, Pod];
      for (const p of [a, b]) stops.push(await startEchoServer(p, { tcp: [8080] }));
      await api.apply(parseYaml(readFileSync('crds/proxypolicies.nftproxy.dev.yaml', 'utf8')));
      await api.apply(service);
      await api.apply(slice([a]));

      // The shipped defaults: backoff 1 s doubling to 30 s, /readyz asked every second.
      const settings = resolveSettings({
        nodeName: 'n1',
        clusterCIDRs: ['10.244.0.0/16'],
        kubeconfig: api.kubeconfigPath,
        netns: topo.node.name,
        healthzBindAddress: '',
        metricsBindAddress: '',
      });
      assert.equal(settings.apiBackoffMaxMs, 30_000);
      assert.equal(settings.apiProbeIntervalMs, 1000);
      const log = capturingLogger();
      const { lines } = log;
      nft = new NetlinkBackend({ netns: topo.node.name });
      op = new Operator({ settings, source: sourceFor(settings, log), nft, log });
      await op.start();
      // The table: empty until the first sync made it.
      const listing = async () =>
        (await topo!.node.run('nft', 'list', 'table', 'ip', 'nftproxy').catch(() => ({ stdout: '' }))).stdout;
      await until('pod-a programmed', async () => (await listing()).includes(a.ip), 15_000).catch((e) => {
        throw new Error(
          `${(e as Error).message}\n${lines.map((l) => `${l.level} ${l.msg} ${JSON.stringify(l.fields)}`).join('\n')}`,
        );
      });

      // Traffic throughout: a new connection every 50 ms.
      const client = topo.client.ns;
      const traffic = probeFor(
        client,
        { host: CLUSTER_IP, port: 80 },
        { durationMs: 88_000, intervalMs: 50 },
      );
      await sleep(2000);
      // Down long enough that the backoff alone would still be waiting when the server
      // answers again (about 3 s after its start): each watch fails at once, then retries
      // after 1, 2, 4, 8, 16, 30, 30 s (each up to a fifth longer), so its 7th retry comes
      // 61..73 s after the outage began and its 8th 91..109 s after. Back at ~79 s, that is
      // 12 s or more of waiting without the probe.
      await api.stopApiServer();
      await sleep(76_000);
      assert.ok((await listing()).includes(a.ip), 'rules kept through the outage');
      await api.startApiServer(); // returns once /readyz says ok
      const back = Date.now();
      await api.apply(slice([a, b]));
      const programmedMs = await until(
        'pod-b programmed',
        async () => (await listing()).includes(b.ip),
        30_000,
      );
      const sinceChange = programmedMs;
      const sinceBack = Date.now() - back;
      assert.ok(
        sinceChange < 5000,
        `programmed ${sinceChange} ms after the change (${sinceBack} ms after /readyz)`,
      );

      const results = await traffic;
      const failed = results.filter((r) => !r.ok);
      assert.ok(results.length > 500, `${results.length} connections`);
      assert.deepEqual(failed, [], `every connection answered: ${JSON.stringify(tally(results))}`);

      const metrics = await op.metrics.scrape();
      for (const kind of ['Service', 'EndpointSlice', 'Node', 'ProxyPolicy'])
        assert.match(metrics, new RegExp(`^nftproxy_watch_connected\\{resource="${kind}"\\} 1$`, 'm'), kind);
      assert.match(metrics, /^nftproxy_watch_failures_total\{resource="Service"\} [1-9]/m);
      const msgs = lines.map((l) => l.msg);
      assert.ok(msgs.includes('API server answers again; reconnecting watches'), msgs.join('; '));
      assert.ok(msgs.includes('watches resumed'), msgs.join('; '));
      process.stdout.write(
        `      outage 76 s: change programmed ${sinceChange} ms after it was made, ${sinceBack} ms after /readyz; ${results.length} connections, none failed\n`,
      );
    } finally {
      await op?.stop();
      nft?.close();
      for (const s of stops) await s().catch(() => undefined);
      await topo?.destroy();
      await api?.stop();
    }
  });
});

describe('real kube-apiserver: optional APIs never hold up the start', function () {
  this.timeout(120_000);
  let api: RealApiServer;

  before(async function () {
    requireRealApiServer(this);
    api = await RealApiServer.start();
    // config/'s Namespace, ServiceAccount, ClusterRole and binding, as a user applies them.
    for (const o of kustomizeBuild('config'))
      if (['Namespace', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding'].includes(o.kind))
        await api.apply(o as never);
  });

  after(async () => {
    await api?.stop();
  });

  /** Starts an API source as config/'s ServiceAccount; resolves with its warnings once synced. */
  async function startAs(): Promise<string[]> {
    const log = capturingLogger();
    const source = new ApiSource({
      nodeName: 'node1',
      kubeConfig: await api.serviceAccountKubeConfig('nftproxy-system', 'nftproxy'),
      backoff: { initialMs: 200, maxMs: 1000 },
      log,
    });
    const sink = { upsert: () => undefined, remove: () => undefined, diagnostics: () => undefined };
    try {
      await Promise.race([
        source.start(sink),
        sleep(20_000).then(() => {
          throw new Error(`not synced in 20 s: ${JSON.stringify(log.lines)}`);
        }),
      ]);
      return log.lines.filter((l) => l.level === 'warn').map((l) => l.msg);
    } finally {
      await source.stop();
    }
  }

  it('ServiceCIDRs on a server without that API (1.20): a 404, no objects', async () => {
    const warnings = await startAs();
    assert.ok(
      warnings.some((w) => w.startsWith('ServiceCIDR API not served')),
      warnings.join('; '),
    );
  });

  it('ServiceCIDRs the ServiceAccount may not list (RBAC of an older release): a 403, no objects', async () => {
    // The server checks RBAC before it looks for the resource: without the grant, a 403.
    const role = kustomizeBuild('config').find((o) => o.kind === 'ClusterRole')! as unknown as {
      rules: { resources: string[] }[];
    };
    await api.apply({
      ...role,
      rules: role.rules.filter((r) => !r.resources.includes('servicecidrs')),
    } as never);
    const warnings = await startAs();
    assert.ok(
      warnings.some((w) => w.startsWith('not allowed to list servicecidrs')),
      warnings.join('; '),
    );
  });
});

describe('real kube-apiserver: services split between proxies by service-proxy-name', function () {
  this.timeout(120_000);
  let api: RealApiServer;

  before(async function () {
    requireRealApiServer(this);
    api = await RealApiServer.start();
    const proxyLabel = (name?: string) => (name ? { 'service.kubernetes.io/service-proxy-name': name } : {});
    for (const [name, proxy] of [
      ['plain', undefined],
      ['ours', 'nftproxy'],
      ['theirs', 'other-proxy'],
    ] as const) {
      await api.apply({
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name, namespace: 'default', labels: proxyLabel(proxy) },
        spec: { ports: [{ port: 80, protocol: 'TCP' }] },
      } as never);
      // The EndpointSlice controller copies the Service's labels to its slices.
      await api.apply({
        apiVersion: 'discovery.k8s.io/v1',
        kind: 'EndpointSlice',
        metadata: {
          name: `${name}-1`,
          namespace: 'default',
          labels: { 'kubernetes.io/service-name': name, ...proxyLabel(proxy) },
        },
        addressType: 'IPv4',
        ports: [{ port: 8080, protocol: 'TCP' }],
        endpoints: [{ addresses: ['10.244.1.1'], conditions: { ready: true } }],
      } as never);
    }
  });

  after(async () => {
    await api?.stop();
  });

  /** The services an operator with this --service-proxy-name programs. */
  async function programmed(serviceProxyName?: string): Promise<string[]> {
    const settings = resolveSettings({
      nodeName: 'node1',
      healthzBindAddress: '',
      metricsBindAddress: '',
      ...(serviceProxyName ? { serviceProxyName } : {}),
    });
    const op = new Operator({
      settings,
      source: sourceFor({ ...settings, kubeconfig: api.kubeconfigPath }, capturingLogger()),
      nft: new FakeBackend(),
    });
    try {
      await op.start();
      await until('synced', async () => op.syncer.current !== undefined, 10_000);
      return [...new Set(op.syncer.current!.units().map((u) => u.service))].sort();
    } finally {
      await op.stop();
    }
  }

  it('without a name: the unlabelled services (kube-proxy’s rule)', async () => {
    assert.deepEqual(await programmed(), ['default/kubernetes', 'default/plain']);
  });

  it('with --service-proxy-name nftproxy: only the services labelled so', async () => {
    assert.deepEqual(await programmed('nftproxy'), ['default/ours']);
  });
});
