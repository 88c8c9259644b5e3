/**
 * @kernel The operator end to end: `nftproxy run` as its own process, reading a manifest
 * directory and programming a node namespace, with real traffic from a client pod.
 * Assertions are about traffic, not timings: each change is awaited with a generous limit.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { createServer, type AddressInfo } from 'node:net';
import { execa } from 'execa';
import { BIN, OperatorProcess } from '../support/operator.js';
import {
  createTopology,
  requireKernel,
  probe,
  probeFor,
  startEchoServer,
  tally,
  type Pod,
  type Topology,
} from '../support/netns.js';
import { eventually as retry } from '../support/eventually.js';

const eventually = (check: () => Promise<void>, timeoutMs = 15_000) => retry(check, timeoutMs);

const svc = (name: string, ip: string, port: number, protocol = 'TCP', targetPort = 8080) => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: 'default' },
  spec: { clusterIP: ip, ports: [{ port, protocol, targetPort }] },
});
const slice = (name: string, pods: Pod[], port = 8080, protocol = 'TCP') => ({
  apiVersion: 'discovery.k8s.io/v1',
  kind: 'EndpointSlice',
  metadata: { name: `${name}-1`, namespace: 'default', labels: { 'kubernetes.io/service-name': name } },
  addressType: 'IPv4',
  ports: [{ port, protocol }],
  endpoints: pods.map((p) => ({ addresses: [p.ip] })),
});
const yamlDocs = (...docs: object[]) => docs.map((d) => stringify(d)).join('---\n');

describe('@kernel nftproxy run: the operator process with the manifest source', function () {
  this.timeout(180_000);
  let t: Topology;
  let dir: string;
  let op: OperatorProcess | undefined;
  const stops: (() => Promise<void>)[] = [];
  const args = () => [
    '--manifests',
    dir,
    '--node',
    'node1',
    '--cluster-cidr',
    '10.244.0.0/16',
    '--netns',
    t.node.name,
    '--healthz-bind-address',
    '127.0.0.1:0',
    '--metrics-bind-address',
    '127.0.0.1:0',
    '--sync-period',
    '500ms',
    '--min-sync-interval',
    '20ms',
    '--log-level',
    'debug',
  ];
  const web = (pods: Pod[]) => yamlDocs(svc('web', '10.96.0.10', 80), slice('web', pods));
  const reaches = async (host: string, port: number, want: string[], protocol: 'tcp' | 'udp' = 'tcp') => {
    const got = Object.keys(tally(await probe(t.client.ns, { host, port, protocol }, 24, 500))).sort();
    assert.deepEqual(got, want);
  };

  before(async function () {
    requireKernel(this);
    t = await createTopology(3);
    dir = await mkdtemp(join(tmpdir(), 'nftproxy-e2e-'));
    try {
      for (const p of t.pods) stops.push(await startEchoServer(p, { tcp: [8080], udp: [5353] }));
      await writeFile(join(dir, 'web.yaml'), web(t.pods));
      op = await OperatorProcess.start(args());
    } catch (e) {
      await Promise.all(stops.map((s) => s()));
      await t.destroy();
      throw e;
    }
  });

  after(async () => {
    await op?.kill('SIGKILL');
    await Promise.all(stops.map((s) => s()));
    await t?.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('programs the node from the manifests, and reports healthy', async () => {
    await reaches('10.96.0.10', 80, ['pod-a', 'pod-b', 'pod-c']);
    const port = (await op!.waitFor((l) => l.msg === 'serving /healthz and /livez', 1000, 0)).port as number;
    const res = await fetch(`http://127.0.0.1:${port}/healthz`);
    assert.equal(res.status, 200);
    assert.equal((await fetch(`http://127.0.0.1:${port}/livez`)).status, 200);
    const metricsPort = (await op!.waitFor((l) => l.msg === 'serving /metrics', 1000, 0)).port as number;
    const metrics = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
    assert.equal(metrics.status, 200);
    const text = await metrics.text();
    assert.match(text, /^kubeproxy_sync_full_proxy_rules_duration_seconds_count [1-9]/m, text);
    assert.match(text, /^nftproxy_services_programmed 1$/m, text);
  });

  it('follows edits, additions and deletions of manifest files', async () => {
    const [a, , c] = t.pods;
    await writeFile(join(dir, 'web.yaml'), web([a!]));
    await eventually(() => reaches('10.96.0.10', 80, ['pod-a']));
    await writeFile(join(dir, 'api.yaml'), yamlDocs(svc('api', '10.96.0.30', 80), slice('api', [c!])));
    await eventually(() => reaches('10.96.0.30', 80, ['pod-c']));
    await unlink(join(dir, 'api.yaml'));
    await eventually(async () => {
      const r = await probe(t.client.ns, { host: '10.96.0.30', port: 80 }, 5, 300);
      assert.ok(
        r.every((x) => !x.ok),
        JSON.stringify(tally(r)),
      );
    });
    await writeFile(join(dir, 'web.yaml'), web(t.pods));
    await eventually(() => reaches('10.96.0.10', 80, ['pod-a', 'pod-b', 'pod-c']));
  });

  it('keeps the last good objects of a file with a YAML typo', async () => {
    // From before the action: the operator may log before waitFor is called.
    const from = op!.logs.length;
    await writeFile(join(dir, 'web.yaml'), web(t.pods) + '\n---\nthis: is: not: yaml\n');
    await op!.waitFor((l) => l.level === 'error' && /unparseable YAML/.test(l.msg), 10_000, from);
    await reaches('10.96.0.10', 80, ['pod-a', 'pod-b', 'pod-c']);
    await writeFile(join(dir, 'web.yaml'), web(t.pods));
  });

  it('repairs its tables after someone deletes them', async () => {
    const from = op!.logs.length;
    await t.node.run('nft', 'delete', 'table', 'ip', 'nftproxy');
    await op!.waitFor((l) => l.msg === 'synced' && (l.reasons as string[]).includes('drift'), 10_000, from);
    await reaches('10.96.0.10', 80, ['pod-a', 'pod-b', 'pod-c']);
  });

  const outside = (l: { msg: string }) => l.msg.startsWith('our nftables tables were changed from outside');
  const repairSync = (l: Record<string, unknown>) =>
    l.msg === 'synced' && (l.reasons as string[]).includes('drift') && l.full === false;
  const list = async (map: string) => (await t.node.run('nft', 'list', 'map', 'ip', 'nftproxy', map)).stdout;

  it('hears an element deleted from outside (nf_tables notifications): added back, and nothing else is sent', async () => {
    await reaches('10.96.0.10', 80, ['pod-a', 'pod-b', 'pod-c']);
    const from = op!.logs.length;
    await t.node.run(
      'nft',
      'delete',
      'element',
      'ip',
      'nftproxy',
      'backends',
      '{ 10.96.0.10 . tcp . 80 . 0 }',
    );
    const warned = await op!.waitFor(outside, 10_000, from);
    assert.equal(warned.process, 'nft');
    assert.deepEqual(warned.changed, ['ip backends']);
    const synced = await op!.waitFor(repairSync, 10_000, from);
    assert.equal(synced.elementsAdded, 1);
    assert.equal(synced.elementsDeleted, 0);
    assert.match(
      await list('backends'),
      /10\.96\.0\.10 \. tcp \. 80 \. 0 (counter packets \d+ bytes \d+ )?: 10\.244\.1\.\d+ \. 8080/,
    );
    await reaches('10.96.0.10', 80, ['pod-a', 'pod-b', 'pod-c']);
  });

  it('hears an element added from outside, and deletes it again', async () => {
    const from = op!.logs.length;
    await t.node.run(
      'nft',
      'add',
      'element',
      'ip',
      'nftproxy',
      'service-ips',
      '{ 10.96.0.99 . tcp . 80 : goto reject-chain }',
    );
    const synced = await op!.waitFor(repairSync, 10_000, from);
    assert.equal(synced.elementsDeleted, 1);
    assert.equal(synced.elementsAdded, 0);
    assert.doesNotMatch(await list('service-ips'), /10\.96\.0\.99/);
  });

  it('hears a chain flushed from outside, and refills it without recompiling (not a full sync)', async () => {
    const from = op!.logs.length;
    await t.node.run('nft', 'flush', 'chain', 'ip', 'nftproxy', 'services');
    const warned = await op!.waitFor(outside, 10_000, from);
    assert.deepEqual(warned.changed, ['ip (chains, rules or sets)']);
    await op!.waitFor(repairSync, 10_000, from);
    await reaches('10.96.0.10', 80, ['pod-a', 'pod-b', 'pod-c']);
  });

  it('does not mistake its own syncs for changes from outside', async () => {
    const from = op!.logs.length;
    await writeFile(join(dir, 'web.yaml'), web(t.pods.slice(0, 2)));
    await eventually(() => reaches('10.96.0.10', 80, ['pod-a', 'pod-b']));
    await writeFile(join(dir, 'web.yaml'), web(t.pods));
    await eventually(() => reaches('10.96.0.10', 80, ['pod-a', 'pod-b', 'pod-c']));
    // Notifications of a commit arrive as it ends; give any stray one time to be logged.
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(op!.logs.slice(from).filter(outside).length, 0);
  });

  it('moves a steady UDP flow to a live endpoint once its endpoint is removed', async () => {
    const [a, b] = t.pods;
    const dns = (pod: Pod) =>
      yamlDocs(svc('dns', '10.96.0.53', 53, 'UDP', 5353), slice('dns', [pod], 5353, 'UDP'));
    await writeFile(join(dir, 'dns.yaml'), dns(a!));
    await eventually(() => reaches('10.96.0.53', 53, ['pod-a'], 'udp'));
    const flow = probeFor(
      t.client.ns,
      { host: '10.96.0.53', port: 53, protocol: 'udp' },
      { durationMs: 4000, intervalMs: 50, steady: true },
    );
    await new Promise((r) => setTimeout(r, 1000));
    // pod-a keeps running: without the conntrack cleanup, the flow would stay with it.
    await writeFile(join(dir, 'dns.yaml'), dns(b!));
    const replies = await flow;
    assert.equal(replies[0]!.server, 'pod-a');
    const last = replies.slice(-20);
    assert.ok(
      last.every((r) => r.server === 'pod-b'),
      `the flow's last answers: ${JSON.stringify(tally(last))}`,
    );
    assert.ok(op!.syncs().some((l) => (l.staleFlows as number) > 0));
  });

  it('keeps traffic flowing while it is killed and started again, and adopts its own rules', async () => {
    const traffic = probeFor(
      t.client.ns,
      { host: '10.96.0.10', port: 80 },
      { durationMs: 6000, intervalMs: 20, timeoutMs: 1000 },
    );
    await new Promise((r) => setTimeout(r, 1000));
    await op!.kill('SIGKILL');
    await new Promise((r) => setTimeout(r, 1000));
    op = await OperatorProcess.start([...args(), '--trace-console']);
    const results = await traffic;
    const failed = results.filter((r) => !r.ok);
    assert.ok(results.length > 100, `${results.length} connections`);
    assert.deepEqual(failed, [], `${failed.length} of ${results.length} connections failed`);
    const first = op.syncs()[0]!;
    assert.equal(first.commands, 0, 'the restarted operator found its rules in place and changed nothing');
  });

  it('prints every sync as spans with --trace-console', async () => {
    assert.ok(
      op!.logs.some((l) => l.msg === 'tracing every sync'),
      'logged',
    );
    // The 'synced' line is logged inside the sync's root span, which is printed when it ends.
    await eventually(async () => {
      for (const name of ['nftproxy.sync', 'nftproxy.sync.collect', 'nftproxy.sync.read_kernel'])
        assert.match(
          op!.stdout,
          new RegExp(`name: '${name.replaceAll('.', '\\.')}'`),
          op!.stdout.slice(0, 2000),
        );
    }, 5_000);
    assert.match(op!.stdout, /'k8s\.node\.name': 'node1'/);
  });

  it('a taken port is one clear line naming the address and its holder, exit 2, no stack trace', async () => {
    const squatter = createServer();
    await new Promise<void>((resolve) => squatter.listen(0, '127.0.0.1', resolve));
    const port = (squatter.address() as AddressInfo).port;
    try {
      const flags = args();
      flags[flags.indexOf('--healthz-bind-address') + 1] = `127.0.0.1:${port}`;
      const r = await execa('node', [BIN, 'run', ...flags], { reject: false, timeout: 60_000 });
      assert.equal(r.exitCode, 2, r.stderr);
      const lines = r.stderr.split('\n').filter((l) => !l.startsWith('{'));
      assert.deepEqual(lines, [
        `nftproxy: cannot listen on 127.0.0.1:${port} for healthz: the port is in use (by node (pid ${process.pid}))`,
      ]);
    } finally {
      await new Promise((r) => squatter.close(r));
    }
  });

  it('stops on SIGTERM and leaves the rules in place', async () => {
    assert.equal(await op!.kill('SIGTERM'), 0);
    op = undefined;
    await reaches('10.96.0.10', 80, ['pod-a', 'pod-b', 'pod-c']);
  });
});
