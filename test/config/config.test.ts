/**
 * The shipped configuration: RBAC stays least-privilege, and the sample config file is valid.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { readSettingsFile, resolveSettings } from '../../src/controller/settings.js';

const path = (p: string) => fileURLToPath(new URL(`../../config/${p}`, import.meta.url));

interface Rule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
}

describe('shipped configuration', () => {
  it('grants read-only access to what nftproxy watches, and writes only ProxyPolicy status and Events', async () => {
    const [role] = parseAllDocuments(await readFile(path('rbac/cluster_role.yaml'), 'utf8')).map(
      (d) => d.toJS() as { rules: Rule[] },
    );
    const writes = new Set(['create', 'update', 'patch', 'delete', 'deletecollection', '*']);
    const allowed = new Set(['proxypolicies/status', 'events']);
    for (const r of role!.rules) {
      assert.ok(
        !r.verbs.includes('*') && !r.resources.includes('*') && !r.apiGroups.includes('*'),
        'no wildcards',
      );
      if (r.verbs.some((v) => writes.has(v)))
        assert.ok(
          r.resources.every((x) => allowed.has(x)),
          `write access to ${r.resources.join(', ')}`,
        );
    }
    const reads = (res: string) =>
      role!.rules.some(
        (r) => r.resources.includes(res) && ['list', 'watch'].every((v) => r.verbs.includes(v)),
      );
    for (const res of ['services', 'endpointslices', 'nodes']) assert.ok(reads(res), `list/watch ${res}`);
  });

  it('binds the role to the service account', async () => {
    const binding = parseAllDocuments(
      await readFile(path('rbac/cluster_role_binding.yaml'), 'utf8'),
    )[0]!.toJS();
    const sa = parseAllDocuments(await readFile(path('rbac/service_account.yaml'), 'utf8'))[0]!.toJS();
    assert.equal(binding.roleRef.name, 'nftproxy');
    assert.deepEqual(binding.subjects[0], {
      kind: 'ServiceAccount',
      name: sa.metadata.name,
      namespace: sa.metadata.namespace,
    });
  });

  it('ships a sample config file that nftproxy accepts', async () => {
    const s = resolveSettings({}, await readSettingsFile(path('nftproxy-config.yaml')), { NODE_NAME: 'n1' });
    assert.equal(s.syncPeriodMs, 30_000);
    assert.equal(s.proxy.clusterCIDRs.length, 2);
  });
});
