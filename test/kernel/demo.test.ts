/**
 * @kernel The README's demo runs, shows traffic reaching every pod, and cleans up.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { requireKernel } from '../support/netns.js';

describe('@kernel demo', function () {
  this.timeout(120_000);

  it('runs, shows traffic on every path, and leaves no namespace behind', async function () {
    requireKernel(this);
    const before = (await execa('ip', ['netns', 'list'])).stdout;
    const demoDirs = async () => (await readdir(tmpdir())).filter((f) => f.startsWith('nftproxy-demo-'));
    const dirsBefore = await demoDirs();
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
    // nftproxy ran as its own process and programmed the node from the manifest copy.
    assert.match(out, /synced: full sync \(start\), 3 services/);
    // The policy, added while it ran: one partial sync, then an exact round robin split,
    // and status reads the scheduler back from the kernel.
    const afterPolicy = out.slice(out.indexOf('round robin: 10 each'));
    assert.match(out, /synced: partial sync \(change\), 1 services/);
    for (const pod of ['pod-a', 'pod-b', 'pod-c'])
      assert.match(afterPolicy, new RegExp(`${pod} +10 #+`), `${pod} got 10 of 30 after the policy`);
    assert.match(out, /TCP {2}10\.96\.0\.10:80 +roundRobin\n/);
    assert.match(out, /UDP {2}10\.96\.0\.53:53 +random\n/);
    assert.match(out, /policy {3}scheduler roundRobin/, 'explain reads the live table');
    // docs/inspect.md's status sample is this run's status, connection counts aside.
    const doc = readFileSync(fileURLToPath(new URL('../../docs/inspect.md', import.meta.url)), 'utf8');
    const fence = doc.slice(doc.indexOf('## status'));
    const sample = fence
      .slice(fence.indexOf('```\n') + 4, fence.indexOf('\n```', fence.indexOf('```\n') + 4))
      .split('\n');
    const lines = out.split('\n');
    const start = lines.findIndex((l) => / service address ports, /.test(l));
    const status = lines.slice(start, start + sample.length - 1).map((l) => l.slice(2));
    const counts = (l: string) => l.replace(/(%\s+)\d+$/, '$1N');
    assert.equal(sample.at(-1), '  ...');
    assert.deepEqual(status.map(counts), sample.slice(0, -1).map(counts));
    // And its explain sample is this run's explain of the same packet.
    const cmd = '$ nftproxy explain --netns NODE --from 192.168.50.2 --to 192.168.50.1:30080/tcp\n';
    const explained = doc
      .slice(doc.indexOf(cmd) + cmd.length, doc.indexOf('\n  ...\n```', doc.indexOf(cmd)))
      .split('\n');
    const at = lines.findIndex((l) => l.startsWith('  packet   192.168.50.2'));
    assert.deepEqual(
      lines.slice(at, at + explained.length).map((l) => l.slice(2)),
      explained,
      'docs/inspect.md explain sample',
    );
    assert.equal((await execa('ip', ['netns', 'list'])).stdout, before, 'no namespace left behind');
    assert.deepEqual(await demoDirs(), dirsBefore, 'the manifest copy is removed');
  });
});
