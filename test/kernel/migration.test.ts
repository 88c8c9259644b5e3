/**
 * @kernel Replacing kube-proxy without dropping connections, as docs/operations.md describes
 * it: a node whose services are translated by a kube-proxy-shaped nftables table (a chain per
 * service, numgen over a chain per endpoint, as kube-proxy's nftables mode writes them) gets
 * nftproxy alongside, then loses the kube-proxy table. New connections made all along
 * succeed, and a UDP flow established before keeps its endpoint to the end.
 */
import assert from 'node:assert/strict';
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { OperatorProcess } from '../support/operator.js';
import {
  createTopology,
  requireKernel,
  probe,
  probeFor,
  startEchoServer,
  tally,
  type Topology,
} from '../support/netns.js';

const MANIFESTS = fileURLToPath(new URL('../../demo/manifests', import.meta.url));
const BIN = fileURLToPath(new URL('../../bin/nftproxy.js', import.meta.url));

/** demo/manifests' web (10.96.0.10:80 -> pods a, b, c :8080) and dns (10.96.0.53:53/udp -> a, b :5353). */
const KUBE_PROXY_TABLE = `
table ip kube-proxy {
  chain endpoint-a-http { meta l4proto tcp dnat to 10.244.1.10:8080; }
  chain endpoint-b-http { meta l4proto tcp dnat to 10.244.1.11:8080; }
  chain endpoint-c-http { meta l4proto tcp dnat to 10.244.1.12:8080; }
  chain endpoint-a-dns { meta l4proto udp dnat to 10.244.1.10:5353; }
  chain endpoint-b-dns { meta l4proto udp dnat to 10.244.1.11:5353; }
  chain service-web {
    numgen random mod 3 vmap { 0 : goto endpoint-a-http, 1 : goto endpoint-b-http, 2 : goto endpoint-c-http }
  }
  chain service-dns { numgen random mod 2 vmap { 0 : goto endpoint-a-dns, 1 : goto endpoint-b-dns }; }
  chain nat-prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr 10.96.0.10 tcp dport 80 goto service-web
    ip daddr 10.96.0.53 udp dport 53 goto service-dns
  }
}
`;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('@kernel replacing kube-proxy on a running node', function () {
  this.timeout(120_000);
  let t: Topology | undefined;
  let dir: string | undefined;
  let op: OperatorProcess | undefined;
  const stops: (() => Promise<void>)[] = [];

  after(async () => {
    await op?.kill('SIGKILL');
    await Promise.all(stops.map((s) => s()));
    await t?.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('keeps every new connection and an established flow while nftproxy comes and kube-proxy goes', async function () {
    requireKernel(this);
    t = await createTopology(3);
    for (const p of t.pods) stops.push(await startEchoServer(p, { tcp: [8080], udp: [5353] }));
    dir = await mkdtemp(join(tmpdir(), 'nftproxy-migration-'));
    await cp(MANIFESTS, dir, { recursive: true });
    await execa('ip', ['netns', 'exec', t.node.name, 'nft', '-f', '-'], { input: KUBE_PROXY_TABLE });
    assert.deepEqual(
      Object.keys(tally(await probe(t.client.ns, { host: '10.96.0.10', port: 80 }, 30))).sort(),
      ['pod-a', 'pod-b', 'pod-c'],
      'kube-proxy-shaped rules serve the ClusterIP before nftproxy comes',
    );

    // Traffic during the whole change: new TCP connections every 20 ms, and one UDP flow.
    const durationMs = 9000;
    const connections = probeFor(
      t.client.ns,
      { host: '10.96.0.10', port: 80 },
      { durationMs, timeoutMs: 1000 },
    );
    const flow = probeFor(
      t.client.ns,
      { host: '10.96.0.53', port: 53, protocol: 'udp' },
      { durationMs, steady: true, intervalMs: 50 },
    );
    await sleep(1000);
    op = await OperatorProcess.start([
      '--manifests',
      dir,
      '--netns',
      t.node.name,
      '--node',
      'node1',
      '--cluster-cidr',
      '10.244.0.0/16',
      '--healthz-bind-address',
      '',
      '--metrics-bind-address',
      '',
    ]);
    await sleep(1500);
    // Both translate now; the kube-proxy rules go (step 5 of docs/operations.md).
    await t.node.run('nft', 'delete', 'table', 'ip', 'kube-proxy');
    const tcp = await connections;
    const udp = await flow;

    assert.ok(tcp.length > 100, `${tcp.length} connections made`);
    assert.deepEqual(
      tcp.filter((r) => !r.ok),
      [],
      'no new connection failed',
    );
    assert.ok(udp.length > 50, `${udp.length} datagrams sent`);
    assert.deepEqual(
      udp.filter((r) => !r.ok),
      [],
      'every datagram of the established flow answered',
    );
    assert.equal(
      Object.keys(tally(udp)).length,
      1,
      `the flow kept its endpoint: ${JSON.stringify(tally(udp))}`,
    );

    // nftproxy alone now: the kube-proxy table is gone and nftproxy's counters count.
    const tables = (await t.node.run('nft', 'list', 'tables')).stdout;
    assert.doesNotMatch(tables, /kube-proxy/);
    const after = await probe(t.client.ns, { host: '10.96.0.10', port: 80 }, 30);
    assert.deepEqual(Object.keys(tally(after)).sort(), ['pod-a', 'pod-b', 'pod-c']);
    const views = JSON.parse(
      (await execa('node', [BIN, 'status', '--netns', t.node.name, '-o', 'json'])).stdout,
    ) as {
      address?: string;
      port: number;
      cluster?: { endpoints: { connections?: number }[] };
    }[];
    const web = views.find((v) => v.address === '10.96.0.10' && v.port === 80);
    const counted = web?.cluster?.endpoints.reduce((n, e) => n + (e.connections ?? 0), 0) ?? 0;
    assert.ok(counted >= 30, `nftproxy counted ${counted} connections to web, at least the last 30`);
  });
});
