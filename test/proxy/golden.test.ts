/**
 * Golden rulesets: the exact script and JSON IR compiled from fixture clusters. A change to
 * the ruleset shows up here as a diff to review. Regenerate with `UPDATE_GOLDEN=1 npm test`.
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { loadManifestDir } from '../../src/k8s/manifests.js';
import { formatDiagnostic } from '../../src/k8s/types.js';
import { compile } from '../../src/proxy/compile.js';
import { parseProxyConfig, type ProxyConfigInput } from '../../src/proxy/config.js';
import { renderRulesetScript, rulesetToJson } from '../../src/nft/ruleset.js';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));

async function golden(name: string, actual: string): Promise<void> {
  const path = here(`../golden/${name}`);
  if (process.env.UPDATE_GOLDEN) await writeFile(path, actual);
  assert.equal(
    actual,
    await readFile(path, 'utf8'),
    `${name} differs; if intended, regenerate with UPDATE_GOLDEN=1 and review the diff`,
  );
}

const CASES: { name: string; dir: string; config: ProxyConfigInput; json?: boolean }[] = [
  {
    name: 'basic',
    dir: 'basic',
    config: { nodeName: 'node1', clusterCIDRs: ['10.244.0.0/16', 'fd00:244::/48'] },
    json: true,
  },
  {
    name: 'basic-nodeport-addresses',
    dir: 'basic',
    config: {
      nodeName: 'node1',
      clusterCIDRs: ['10.244.0.0/16'],
      nodePortAddresses: ['192.168.50.0/24', 'primary'],
      masqueradeAll: true,
    },
  },
  { name: 'mixed', dir: 'mixed', config: { nodeName: 'node1', clusterCIDRs: ['10.244.0.0/16'] } },
];

describe('golden rulesets', () => {
  for (const c of CASES) {
    it(`${c.name}: script${c.json ? ', JSON IR' : ''} and diagnostics`, async () => {
      const { state, diagnostics } = await loadManifestDir(here(`../fixtures/clusters/${c.dir}`));
      const result = compile(state, parseProxyConfig(c.config));
      await golden(`${c.name}.nft`, renderRulesetScript(result.ruleset));
      if (c.json)
        await golden(`${c.name}.json`, JSON.stringify(rulesetToJson(result.ruleset), null, 2) + '\n');
      const messages = [...diagnostics, ...result.diagnostics]
        .map((d) =>
          formatDiagnostic({ ...d, ...(d.origin ? { origin: d.origin.replace(/^.*fixtures\//, '') } : {}) }),
        )
        .join('\n');
      await golden(`${c.name}.diagnostics.txt`, messages + '\n');
    });
  }
});
