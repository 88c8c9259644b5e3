/**
 * @kernel Per-endpoint connection counters on /metrics (--endpoint-metrics): the operator with
 * the netlink backend programs a node namespace; connections from a client pod are counted by
 * the kernel on the backends map elements, and a scrape exports them by service, address and
 * endpoint, up to the series limit.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { Operator } from '../../src/controller/operator.js';
import { ManifestSource } from '../../src/k8s/manifest-source.js';
import { NetlinkBackend } from '../../src/nft/netlink/backend.js';
import { backendElements } from '../../src/controller/reports.js';
import { Maps, TABLE } from '../../src/proxy/names.js';
import {
  createTopology,
  requireKernel,
  probe,
  startEchoServer,
  tally,
  type Topology,
} from '../support/netns.js';
import { testSettings } from '../support/operator.js';

/** `nftproxy_endpoint_connections_total` samples: labels text -> value. */
function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of text.matchAll(/^nftproxy_endpoint_connections_total\{(.*)\} (\d+)$/gm))
    out.set(m[1]!, Number(m[2]));
  return out;
}

describe('@kernel endpoint connection counters on /metrics', function () {
  this.timeout(120_000);
  let t: Topology | undefined;
  let dir: string | undefined;
  const stops: (() => Promise<void>)[] = [];

  before(function () {
    requireKernel(this);
  });

  after(async () => {
    for (const s of stops) await s().catch(() => undefined);
    await t?.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** `keyedReadsFrom` 0: counters asked for by key, whatever the set's size; else dumped as small sets are. */
  async function operator(
    endpointMetrics: number,
    keyedReadsFrom?: number,
  ): Promise<{ op: Operator; nft: NetlinkBackend }> {
    const settings = testSettings({
      nodeName: 'node1',
      clusterCIDRs: ['10.244.0.0/16'],
      metricsBindAddress: '127.0.0.1:0',
      endpointMetrics,
    });
    const nft = new NetlinkBackend({
      netns: t!.node.name,
      ...(keyedReadsFrom !== undefined ? { keyedReadsFrom } : {}),
    });
    const op = new Operator({ settings, source: new ManifestSource(dir!), nft });
    await op.start();
    for (let i = 0; i < 100 && !op.syncer.current; i++) await new Promise((r) => setTimeout(r, 50));
    return { op, nft };
  }

  it('counts each new connection on the endpoint it went to, and keeps to the series limit', async () => {
    t = await createTopology(3);
    for (const p of t.pods) stops.push(await startEchoServer(p, { tcp: [8080] }));
    dir = await mkdtemp(join(tmpdir(), 'nftproxy-epm-'));
    await writeFile(
      join(dir, 'web.yaml'),
      [
        {
          apiVersion: 'v1',
          kind: 'Node',
          metadata: { name: 'node1' },
          status: { addresses: [{ type: 'InternalIP', address: t.nodeIP }] },
        },
        {
          apiVersion: 'v1',
          kind: 'Service',
          metadata: { name: 'web', namespace: 'shop' },
          spec: {
            type: 'NodePort',
            clusterIP: '10.96.0.10',
            ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30080 }],
          },
        },
        {
          apiVersion: 'discovery.k8s.io/v1',
          kind: 'EndpointSlice',
          metadata: { name: 'web-1', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'web' } },
          addressType: 'IPv4',
          ports: [{ name: 'http', port: 8080 }],
          endpoints: t.pods.map((p) => ({ addresses: [p.ip] })),
        },
      ]
        .map((o) => stringify(o))
        .join('---\n'),
    );
    let { op, nft } = await operator(100, 0);
    try {
      const results = await probe(t.client.ns, { host: '10.96.0.10', port: 80 }, 30);
      assert.ok(results.every((r) => r.ok));
      const byPod = tally(results);
      const text = await (await fetch(`http://127.0.0.1:${op.metricsPort}/metrics`)).text();
      const got = samples(text);
      for (const p of t.pods) {
        const labels = `service="shop/web",port_name="http",address="10.96.0.10",protocol="tcp",port="80",endpoint="${p.ip}:8080"`;
        assert.equal(got.get(labels), byPod[p.name] ?? 0, `${p.name}: ${[...got].join('\n')}`);
        assert.ok(
          got.has(labels.replace('address="10.96.0.10"', 'address="*"').replace('port="80"', 'port="30080"')),
          'NodePort series',
        );
      }
      assert.match(text, /^nftproxy_endpoint_connections_series_dropped 0$/m);

      // Asked for by key, the counters are the dump's; with an element the kernel lacks, the
      // read falls back to the dump.
      const dumped = new NetlinkBackend({ netns: t.node.name });
      try {
        const known = backendElements(op.syncer.current!);
        for (const set of [Maps.backends, Maps.nodeportBackends]) {
          const elements = known.get(`ip ${set}`)!;
          const lines = elements.lines();
          assert.equal(elements.count, lines.length, `${set}: counted as many as made`);
          const dump = await dumped.listElementCounters('ip', TABLE, set);
          assert.ok(
            dump && dump.size === lines.length,
            `${set}: ${dump?.size} elements for ${lines.length} lines`,
          );
          assert.deepEqual(await nft.listElementCounters('ip', TABLE, set, elements), dump, `${set} by key`);
          // Only what is asked for comes back: these were read by key, not dumped.
          const two = await nft.listElementCounters('ip', TABLE, set, {
            count: 2,
            lines: () => lines.slice(0, 2),
          });
          assert.deepEqual([...two!.keys()], lines.slice(0, 2), `${set}: two asked, two read`);
          const stale =
            set === Maps.backends
              ? '10.96.9.9 . tcp . 80 . 0 : 10.244.9.9 . 80'
              : 'tcp . 30999 . 0 : 10.244.9.9 . 80';
          assert.deepEqual(
            await nft.listElementCounters('ip', TABLE, set, {
              count: lines.length + 1,
              lines: () => [...lines, stale],
            }),
            dump,
            `${set}: fallback`,
          );
        }
      } finally {
        dumped.close();
      }
    } finally {
      await op.stop();
      nft.close();
    }
    ({ op, nft } = await operator(2));
    try {
      const text = await (await fetch(`http://127.0.0.1:${op.metricsPort}/metrics`)).text();
      assert.equal(samples(text).size, 2);
      assert.match(text, /^nftproxy_endpoint_connections_series_dropped 4$/m);
    } finally {
      await op.stop();
      nft.close();
    }
  });
});
