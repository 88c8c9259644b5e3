/**
 * @kernel The README's demo runs, shows traffic reaching every pod, and cleans up.
 */
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { kernelTestsPossible } from '../support/netns.js';

describe('@kernel demo', function () {
  this.timeout(120_000);

  it('runs, shows traffic on every path, and leaves no namespace behind', async function () {
    if (kernelTestsPossible()) return this.skip();
    const before = (await execa('ip', ['netns', 'list'])).stdout;
    const r = await execa(
      'node',
      ['--import', 'tsx', fileURLToPath(new URL('../../demo/demo.ts', import.meta.url))],
      { reject: false },
    );
    assert.equal(r.exitCode, 0, r.stderr);
    const out = r.stdout;
    for (const pod of ['pod-a', 'pod-b', 'pod-c'])
      assert.match(out, new RegExp(`${pod} +\\d+ #+ +saw the client as 10\\.244\\.1\\.100`));
    assert.match(
      out,
      /pod-[abc] +\d+ #+ +saw the client as 10\.244\.1\.1\n/,
      'NodePort traffic is masqueraded',
    );
    assert.match(out, /refused \(ECONNREFUSED\) +5 /);
    assert.match(out, /verdict {2}DNAT to one of 3 endpoints/);
    assert.equal((await execa('ip', ['netns', 'list'])).stdout, before);
  });
});
