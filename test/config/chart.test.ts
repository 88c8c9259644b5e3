/**
 * charts/nftproxy against config/: `helm template` (helm v3.17.1) with the default values
 * renders what `kubectl kustomize config/` (kubectl v1.30) does, object for object (the config
 * file compared as the settings it holds), and each value lands where it should.
 */
import assert from 'node:assert/strict';
import { lstatSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { parse, parseAllDocuments } from 'yaml';
import { requireTool } from '../support/tools.js';
import { type KObject, objectKey } from '../support/kustomize.js';

const repo = (p: string) => fileURLToPath(new URL(`../../${p}`, import.meta.url));

const docs = (text: string) =>
  parseAllDocuments(text)
    .map((d) => d.toJS() as KObject | null)
    .filter((o): o is KObject => o !== null);
const key = objectKey;

/** The config file of the ConfigMap as settings, so comments and layout do not count. */
function settingsOf(objects: KObject[]): unknown {
  const cm = objects.find((o) => o.kind === 'ConfigMap') as unknown as { data: Record<string, string> };
  return parse(cm.data['config.yaml']!);
}

async function helmTemplate(helm: string, ...args: string[]): Promise<KObject[]> {
  const r = await execa(helm, [
    'template',
    'nftproxy',
    repo('charts/nftproxy'),
    '-n',
    'nftproxy-system',
    ...args,
  ]);
  return docs(r.stdout);
}

interface Container {
  image: string;
  ports: { name: string; containerPort: number }[];
  env: { name: string; value?: string }[];
  resources: unknown;
}
const container = (objects: KObject[]) =>
  (
    objects.find((o) => o.kind === 'DaemonSet') as unknown as {
      spec: { template: { spec: { containers: Container[] } } };
    }
  ).spec.template.spec.containers[0]!;

describe('Helm chart', function () {
  this.timeout(60_000);

  it('lints', async function () {
    const helm = requireTool(this, 'helm');
    const r = await execa(helm, ['lint', '--strict', repo('charts/nftproxy')], { reject: false });
    assert.equal(r.exitCode, 0, r.stdout + r.stderr);
  });

  it('renders what kubectl kustomize config/ builds, with the default values', async function () {
    const helm = requireTool(this, 'helm');
    const kubectl = requireTool(this, 'kubectl');
    const chart = await helmTemplate(helm, '--include-crds', '--set', 'namespace.create=true');
    const base = docs((await execa(kubectl, ['kustomize', repo('config')])).stdout);
    assert.deepEqual(chart.map(key).sort(), base.map(key).sort());
    assert.deepEqual(settingsOf(chart), settingsOf(base), 'the config file holds the same settings');
    const byKey = new Map(chart.map((o) => [key(o), o]));
    for (const o of base) {
      if (o.kind === 'ConfigMap') continue;
      assert.deepEqual(byKey.get(key(o)), o, key(o));
    }
  });

  it('puts each value where it belongs', async function () {
    const helm = requireTool(this, 'helm');
    const objects = await helmTemplate(
      helm,
      '--set',
      'image.tag=9.9.9,ports.healthz=10356,ports.metrics=10349,apiServer.host=10.0.0.1,apiServer.port=6443',
      '--set',
      'config.clusterCIDRs={10.0.0.0/8},config.serviceProxyName=nftproxy,resources.limits.memory=1Gi',
    );
    const c = container(objects);
    assert.equal(c.image, 'ghcr.io/nftproxy/nftproxy:9.9.9');
    assert.deepEqual(
      c.ports.map((p) => [p.name, p.containerPort]),
      [
        ['healthz', 10356],
        ['metrics', 10349],
      ],
    );
    assert.deepEqual(
      c.env.filter((e) => e.name.startsWith('KUBERNETES_')).map((e) => [e.name, e.value]),
      [
        ['KUBERNETES_SERVICE_HOST', '10.0.0.1'],
        ['KUBERNETES_SERVICE_PORT', '6443'],
      ],
    );
    assert.deepEqual((c.resources as { limits: unknown }).limits, { memory: '1Gi' });
    const settings = settingsOf(objects) as Record<string, unknown>;
    assert.deepEqual(settings.clusterCIDRs, ['10.0.0.0/8']);
    assert.equal(settings.serviceProxyName, 'nftproxy');
    assert.equal(settings.healthzBindAddress, '0.0.0.0:10356', 'the config binds the declared port');
    assert.equal(settings.metricsBindAddress, '0.0.0.0:10349');
    assert.ok(!objects.some((o) => o.kind === 'Namespace'), 'no Namespace unless asked');
    assert.ok(
      !objects.some((o) => o.kind === 'CustomResourceDefinition'),
      'CRDs only with --include-crds (crds/)',
    );
  });

  it('declares no metrics port when metrics stay on the node (127.0.0.1)', async function () {
    const helm = requireTool(this, 'helm');
    const objects = await helmTemplate(helm, '--set', 'metricsBindAddress=127.0.0.1');
    assert.deepEqual(
      container(objects).ports.map((p) => p.name),
      ['healthz'],
    );
    assert.equal((settingsOf(objects) as Record<string, unknown>).metricsBindAddress, '127.0.0.1:10249');
  });

  it('packages with the CRD and the ClusterRole of config/ inside (the links resolved)', async function () {
    const helm = requireTool(this, 'helm');
    const dir = mkdtempSync(join(tmpdir(), 'nftproxy-chart-'));
    try {
      await execa(helm, ['package', repo('charts/nftproxy'), '--destination', dir]);
      const { version } = JSON.parse(readFileSync(repo('package.json'), 'utf8')) as { version: string };
      const tgz = join(dir, `nftproxy-${version}.tgz`);
      await execa('tar', ['-xzf', tgz, '-C', dir]);
      for (const [inChart, original] of [
        ['crds/proxypolicies.nftproxy.dev.yaml', 'crds/proxypolicies.nftproxy.dev.yaml'],
        ['files/cluster_role.yaml', 'config/rbac/cluster_role.yaml'],
      ]) {
        const packed = join(dir, 'nftproxy', inChart!);
        assert.ok(!lstatSync(packed).isSymbolicLink(), `${inChart} is a file in the package`);
        assert.equal(readFileSync(packed, 'utf8'), readFileSync(repo(original!), 'utf8'), inChart);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("is versioned with the package: version and appVersion are package.json's", () => {
    const chart = parse(readFileSync(repo('charts/nftproxy/Chart.yaml'), 'utf8')) as {
      version: string;
      appVersion: string;
    };
    const { version } = JSON.parse(readFileSync(repo('package.json'), 'utf8')) as { version: string };
    assert.deepEqual([chart.version, chart.appVersion], [version, version]);
  });
});
