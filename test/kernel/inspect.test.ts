/**
 * @kernel The inspection commands against a real table in a namespace: `status` counts the
 * connections each endpoint got (and nothing for the others), `explain` on the live table
 * agrees with `explain --manifests`, `diff` sees what a sync would change, and `conntrack`
 * shows which endpoint each connection went to.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { loadManifestDir } from '../../src/k8s/manifests.js';
import { diffRulesets } from '../../src/nft/diff.js';
import { ExecBackend } from '../../src/nft/exec.js';
import { compile } from '../../src/proxy/compile.js';
import { parseProxyConfig } from '../../src/proxy/config.js';
import type { ServiceView } from '../../src/proxy/inspect.js';
import type { ServiceFlow } from '../../src/cli/conntrack.js';
import { FakeApiServer } from '../support/apiserver.js';
import {
  createTopology,
  requireKernel,
  probe,
  startEchoServer,
  tally,
  type Topology,
} from '../support/netns.js';

const BIN = fileURLToPath(new URL('../../bin/nftproxy.js', import.meta.url));
const NODE_FLAGS = ['--node', 'node1', '--cluster-cidr', '10.244.0.0/16'];

const service = (name: string, ip: string, extra: Record<string, unknown> = {}) => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: 'default' },
  spec: { clusterIP: ip, ports: [{ port: 80, targetPort: 8080 }], ...extra },
});
const slice = (name: string, ips: string[]) => ({
  apiVersion: 'discovery.k8s.io/v1',
  kind: 'EndpointSlice',
  metadata: { name: `${name}-1`, namespace: 'default', labels: { 'kubernetes.io/service-name': name } },
  addressType: 'IPv4',
  ports: [{ port: 8080 }],
  endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true }, nodeName: 'node1' })),
});

/** The cluster: web and idle share the three pods; empty has none; web has a NodePort. */
function manifests(t: Topology, webIPs = t.pods.map((p) => p.ip)): object[] {
  return [
    {
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name: 'node1' },
      status: { addresses: [{ type: 'InternalIP', address: t.nodeIP }] },
    },
    service('web', '10.96.0.10', {
      type: 'NodePort',
      ports: [{ port: 80, targetPort: 8080, nodePort: 30080 }],
    }),
    slice('web', webIPs),
    service('idle', '10.96.0.11'),
    slice(
      'idle',
      t.pods.map((p) => p.ip),
    ),
    service('empty', '10.96.0.12'),
  ];
}

async function writeManifests(dir: string, objects: object[]): Promise<void> {
  await writeFile(join(dir, 'cluster.yaml'), objects.map((o) => JSON.stringify(o)).join('\n---\n'));
}

function cli(...args: string[]) {
  return execa('node', [BIN, ...args], { reject: false, env: { NODE_NAME: '' } });
}

describe('@kernel inspection commands on a live table', function () {
  this.timeout(120_000);
  let t: Topology | undefined;
  let dir = '';
  const stops: (() => Promise<void>)[] = [];
  /** Connections per pod name made through 10.96.0.10:80. */
  let made: Record<string, number> = {};

  before(async function () {
    requireKernel(this);
    dir = await mkdtemp(join(tmpdir(), 'nftproxy-inspect-'));
    t = await createTopology(3);
    for (const p of t.pods) stops.push(await startEchoServer(p, { tcp: [8080] }));
    await writeManifests(dir, manifests(t));
    const { state } = await loadManifestDir(dir);
    const ruleset = compile(
      state,
      parseProxyConfig({ nodeName: 'node1', clusterCIDRs: ['10.244.0.0/16'] }),
    ).ruleset;
    await new ExecBackend({ command: t.node.nftCommand }).apply(diffRulesets(undefined, ruleset).tx);
    const results = await probe(t.client.ns, { host: '10.96.0.10', port: 80 }, 24);
    assert.ok(
      results.every((r) => r.ok),
      JSON.stringify(tally(results)),
    );
    made = tally(results);
  });

  after(async () => {
    await Promise.all(stops.map((s) => s()));
    await t?.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('status: each endpoint counts exactly the connections it got; the idle service none', async () => {
    const r = await cli('status', '--netns', t!.node.name, '-o', 'json');
    assert.equal(r.exitCode, 0, r.stderr);
    const views = JSON.parse(r.stdout) as ServiceView[];
    const web = views.find((v) => v.address === '10.96.0.10');
    assert.ok(web?.cluster, r.stdout);
    const podOf = new Map(t!.pods.map((p) => [p.ip, p.name]));
    const counted = Object.fromEntries(
      web.cluster.endpoints.map((e) => [podOf.get(e.address)!, e.connections ?? -1]),
    );
    const expected = Object.fromEntries(t!.pods.map((p) => [p.name, made[p.name] ?? 0]));
    assert.deepEqual(counted, expected);
    const idle = views.find((v) => v.address === '10.96.0.11');
    assert.deepEqual(
      idle?.cluster?.endpoints.map((e) => e.connections),
      [0, 0, 0],
      'no traffic, no count',
    );
    assert.equal(views.find((v) => v.address === '10.96.0.12')?.state, 'reject');

    const text = await cli('status', '--netns', t!.node.name);
    assert.equal(text.exitCode, 0, text.stderr);
    for (const p of t!.pods) {
      assert.match(
        text.stdout,
        new RegExp(`-> ${p.ip.replaceAll('.', '\\.')}:8080 +1 +33\\.3% +${made[p.name] ?? 0}\\n`),
      );
    }
    assert.match(text.stdout, /TCP {2}\*:30080 \(NodePort\) +random/);
  });

  it('status: a clear message when there is no table', async () => {
    const r = await cli('status', '--netns', t!.external.name);
    assert.equal(r.exitCode, 2);
    assert.match(r.stderr, /no nftproxy tables in network namespace nftp-ext-/);
  });

  it('explain on the live table agrees with explain --manifests', async () => {
    const cases = [
      ['--from', t!.client.ip, '--to', '10.96.0.10:80/tcp'],
      ['--from', t!.externalIP, '--to', `${t!.nodeIP}:30080/tcp`],
      ['--from', t!.client.ip, '--to', '10.96.0.12:80/tcp'],
      ['--from', t!.nodeIP, '--to', '10.96.0.11:80/tcp'],
    ];
    for (const c of cases) {
      const live = await cli('explain', '--netns', t!.node.name, ...c, '-o', 'json');
      const offline = await cli('explain', '--manifests', dir, ...NODE_FLAGS, ...c, '-o', 'json');
      assert.equal(live.exitCode, 0, live.stderr);
      assert.equal(offline.exitCode, 0, offline.stderr);
      type Out = {
        packet: { entry: string };
        endpoints: string[];
        outcomes: { verdict: string; masquerade?: boolean }[];
        service: unknown;
      };
      const l = JSON.parse(live.stdout) as Out;
      const o = JSON.parse(offline.stdout) as Out;
      const gist = (x: Out) => ({
        entry: x.packet.entry,
        endpoints: x.endpoints,
        outcomes: x.outcomes.map((y) => [y.verdict, y.masquerade ?? false]),
        owned: x.service !== null,
      });
      assert.deepEqual(gist(l), gist(o), c.join(' '));
    }
    const text = await cli(
      'explain',
      '--netns',
      t!.node.name,
      '--from',
      t!.client.ip,
      '--to',
      '10.96.0.10:80',
    );
    assert.match(text.stdout, /service {2}10\.96\.0\.10:80\/tcp \(live table\)/);
    assert.match(text.stdout, /verdict {2}DNAT to one of 3 endpoints, chosen at random/);
  });

  it('diff: in step says so (exit 0); a changed cluster shows the transaction (exit 1)', async () => {
    const same = await cli('diff', '--manifests', dir, ...NODE_FLAGS, '--netns', t!.node.name);
    assert.equal(same.exitCode, 0, same.stdout + same.stderr);
    assert.match(same.stdout, /in step: nothing to change/);

    const changed = await mkdtemp(join(tmpdir(), 'nftproxy-inspect-'));
    try {
      await writeManifests(changed, manifests(t!, [t!.pods[0]!.ip]));
      const r = await cli('diff', '--manifests', changed, ...NODE_FLAGS, '--netns', t!.node.name);
      assert.equal(r.exitCode, 1, r.stdout + r.stderr);
      assert.match(r.stdout, /elements? added/);
      assert.match(r.stdout, /delete element ip nftproxy backends .*10\.96\.0\.10 \. tcp \. 80 \. 1/);
      const json = await cli(
        'diff',
        '--manifests',
        changed,
        ...NODE_FLAGS,
        '--netns',
        t!.node.name,
        '-o',
        'json',
      );
      const stats = JSON.parse(json.stdout) as { differs: boolean; elementsDeleted: number };
      assert.equal(stats.differs, true);
      assert.ok(stats.elementsDeleted >= 2, json.stdout);
    } finally {
      await rm(changed, { recursive: true, force: true });
    }
  });

  it("diff with the operator's config file uses its settings and source", async () => {
    const config = join(dir, '..', `${dir.split('/').at(-1)}.yaml`);
    try {
      const settings = ['nodeName: node1', 'clusterCIDRs: [10.244.0.0/16]', `manifests: ${dir}`];
      await writeFile(config, settings.join('\n'));
      const same = await cli('diff', '--config', config, '--netns', t!.node.name);
      assert.equal(same.exitCode, 0, same.stdout + same.stderr);
      await writeFile(config, [...settings, 'endpointCounters: false'].join('\n'));
      const other = await cli('diff', '--config', config, '--netns', t!.node.name);
      assert.equal(other.exitCode, 1, other.stdout + other.stderr);
      assert.match(other.stdout, /replaced: ip nftproxy: .*backends/);
    } finally {
      await rm(config, { force: true });
    }
  });

  it('diff against the API server: the same cluster listed from it is in step', async () => {
    const api = new FakeApiServer();
    await api.start();
    const kubeconfig = join(dir, 'kubeconfig');
    try {
      for (const o of manifests(t!)) api.apply(o as Parameters<FakeApiServer['apply']>[0]);
      await writeFile(kubeconfig, api.kubeConfig().exportConfig());
      const args = ['diff', '--kubeconfig', kubeconfig, ...NODE_FLAGS, '--netns', t!.node.name];
      const same = await cli(...args);
      assert.equal(same.exitCode, 0, same.stdout + same.stderr);
      assert.match(same.stdout, /in step/);
      api.delete('Service', 'default', 'idle');
      const changed = await cli(...args);
      assert.equal(changed.exitCode, 1, changed.stdout + changed.stderr);
      assert.match(changed.stdout, /delete element ip nftproxy service-ips \{ 10\.96\.0\.11 \. tcp \. 80 \}/);
    } finally {
      await api.stop();
      await rm(kubeconfig, { force: true });
    }
  });

  it('conntrack: every connection made, with the endpoint it went to', async () => {
    const r = await cli('conntrack', '10.96.0.10:80/tcp', '--netns', t!.node.name, '-o', 'json');
    assert.equal(r.exitCode, 0, r.stderr);
    const flows = JSON.parse(r.stdout) as ServiceFlow[];
    assert.ok(
      flows.every((f) => f.service === '10.96.0.10:80/tcp' && f.client.startsWith(`${t!.client.ip}:`)),
      r.stdout,
    );
    const byPod: Record<string, number> = {};
    for (const f of flows) {
      const pod = t!.pods.find((p) => f.endpoint === `${p.ip}:8080`);
      assert.ok(pod, `endpoint of ${JSON.stringify(f)}`);
      byPod[pod.name] = (byPod[pod.name] ?? 0) + 1;
    }
    assert.deepEqual(byPod, made);

    const all = await cli('conntrack', '--netns', t!.node.name);
    assert.equal(all.exitCode, 0, all.stderr);
    assert.match(all.stdout, new RegExp(`^${flows.length} connections$`, 'm'));
    const unknown = await cli('conntrack', '10.96.0.99:80', '--netns', t!.node.name);
    assert.equal(unknown.exitCode, 2);
    assert.match(unknown.stderr, /no service at 10\.96\.0\.99:80/);
  });
});
