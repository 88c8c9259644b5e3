/**
 * @kernel The quick benchmark runs and writes its result files: a smoke test, judging no
 * time (performance is measured by `npm run bench`, and reported in docs/benchmarks.md).
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import type { IncrementalResults } from '../../bench/incremental.js';
import type { LatencyResults } from '../../bench/latency.js';
import type { MemoryResults } from '../../bench/memory.js';
import type { PeerResults } from '../../bench/real-peer.js';
import { realApiServerMissing } from '../support/kube-apiserver.js';
import type { SyncResults } from '../../bench/sync.js';
import { requireKernel } from '../support/netns.js';

describe('@kernel benchmarks, quick mode', function () {
  this.timeout(240_000);

  it('npm run bench:quick builds the benchmarks and writes the full-sync, incremental, latency, memory and real-peer results, with every shape and backend measured, and their plots', async function () {
    requireKernel(this);
    const out = await mkdtemp(join(tmpdir(), 'nftproxy-bench-'));
    try {
      const r = await execa('npm', ['run', '--silent', 'bench:quick', '--', '--out', out], {
        cwd: fileURLToPath(new URL('../..', import.meta.url)),
        reject: false,
      });
      assert.equal(r.exitCode, 0, r.stderr);
      const results = JSON.parse(await readFile(join(out, 'sync.json'), 'utf8')) as SyncResults;
      assert.deepEqual(
        results.sizes.map((s) => s.services),
        [100, 1000],
      );
      for (const size of results.sizes) {
        assert.equal(size.endpoints, size.services * 5.5);
        for (const shape of ['nftproxy', 'nftproxyNft', 'floor', 'kubeProxy136', 'kubeProxy'] as const)
          assert.ok((size.times[shape]?.median ?? 0) > 0, `${shape} at ${size.services} measured`);
        assert.ok(size.bytes.kubeProxy > size.bytes.floor, 'kube-proxy writes more script than nftproxy');
      }
      const md = await readFile(join(out, 'sync.md'), 'utf8');
      assert.match(md, /\| 1000 \| 5500 \| /);
      const inc = JSON.parse(await readFile(join(out, 'incremental.json'), 'utf8')) as IncrementalResults;
      assert.equal(inc.services, 100);
      assert.equal(inc.samples.length, 5, 'one measurement per change');
      assert.ok(inc.samples.every((x) => x > 0));
      assert.ok(inc.toKernel.median >= inc.toNft.median, 'committed after it was handed to the backend');
      assert.ok(inc.rssMB > 0);
      assert.equal(inc.backend, 'netlink');
      const incNft = JSON.parse(
        await readFile(join(out, 'nft', 'incremental.json'), 'utf8'),
      ) as IncrementalResults;
      assert.equal(incNft.backend, 'nft');
      assert.equal(incNft.samples.length, 5);
      assert.ok((incNft.applyByKind?.remove.n ?? 0) > 0, 'deletions measured by kind');
      const mem = JSON.parse(await readFile(join(out, 'memory.json'), 'utf8')) as MemoryResults;
      assert.equal(mem.services, 1000);
      assert.ok(mem.peakMB >= mem.rssAfterSyncMB && mem.rssAfterSyncMB > 0, JSON.stringify(mem));
      assert.equal(mem.fullSyncs, 1, 'one full sync, then only partial ones');
      const lat = JSON.parse(await readFile(join(out, 'latency.json'), 'utf8')) as LatencyResults;
      assert.deepEqual(
        lat.rows.map((r) => `${r.shape} ${r.services} ${r.target} ${r.latency.n}`),
        ['first', 'last', 'direct']
          .flatMap((t) => [`nftproxy 100 ${t} 20`])
          .concat(['first', 'last', 'direct'].map((t) => `iptables 100 ${t} 20`)),
      );
      if (!realApiServerMissing()) {
        const peer = JSON.parse(await readFile(join(out, 'real-peer.json'), 'utf8')) as PeerResults;
        assert.match(peer.kubeProxyVersion, /v1\.20/);
        const [run] = peer.runs;
        assert.equal(run?.services, 100);
        for (const p of [run!.nftproxy, run!.kubeProxy]) {
          assert.ok(p.firstSyncMs > 0 && p.readyMs >= p.firstSyncMs, JSON.stringify(p));
          assert.ok(p.changeSyncMs.length >= 2, `a sync per change: ${JSON.stringify(p)}`);
        }
        assert.match(run!.nftproxy.programmed, /^10[0-9] service-ips elements$/, run!.nftproxy.programmed);
        const rules = Number(/^(\d+) KUBE-SERVICES rules/.exec(run!.kubeProxy.programmed)?.[1]);
        assert.ok(rules >= 100, `kube-proxy programmed every service: ${run!.kubeProxy.programmed}`);
      }
      for (const svg of ['sync.svg', 'incremental.svg', 'latency.svg'])
        assert.match(await readFile(join(out, svg), 'utf8'), /^<svg/, svg);
    } finally {
      await rm(out, { recursive: true, force: true });
    }
  });
});
