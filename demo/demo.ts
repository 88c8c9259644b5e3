/**
 * The nftproxy demo: a small cluster in network namespaces, programmed by nftproxy from
 * demo/manifests, with real traffic. Everything it creates is removed at the end, also on
 * failure or Ctrl-C. Run it with scripts/demo (as root).
 */
import { fileURLToPath } from 'node:url';
import { formatHostPort } from '../src/net/ip.js';
import { loadManifestDir } from '../src/k8s/manifests.js';
import { formatDiagnostic } from '../src/k8s/types.js';
import { compile, localAddresses } from '../src/proxy/compile.js';
import { parseProxyConfig } from '../src/proxy/config.js';
import { diffRulesets } from '../src/nft/diff.js';
import { ExecBackend } from '../src/nft/exec.js';
import { Tracer } from '../src/nft/tracer.js';
import { findEntry, formatTrace, ownerOfEntry } from '../src/cli/explain.js';
import { readLiveRuleset, servicesOf } from '../src/cli/live.js';
import { formatStatus } from '../src/cli/status.js';
import {
  createTopology,
  kernelTestsPossible,
  probe,
  type ProbeResult,
  startEchoServer,
  type Topology,
} from '../test/support/netns.js';

const MANIFESTS = fileURLToPath(new URL('manifests', import.meta.url));
const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
const say = (s = '') => process.stdout.write(s + '\n');

function histogram(title: string, results: ProbeResult[]): void {
  say(`  ${title}`);
  const by = new Map<string, { n: number; seen: Set<string> }>();
  for (const r of results) {
    const key = r.ok ? r.server! : `refused (${r.error})`;
    const e = by.get(key) ?? { n: 0, seen: new Set<string>() };
    e.n++;
    if (r.seenFrom) e.seen.add(r.seenFrom);
    by.set(key, e);
  }
  for (const [key, { n, seen }] of [...by].sort()) {
    const bar = '#'.repeat(Math.round((40 * n) / results.length));
    const from = seen.size ? `  saw the client as ${[...seen].join(', ')}` : '';
    say(`    ${key.padEnd(20)} ${String(n).padStart(3)} ${bar}${from}`);
  }
}

async function main(): Promise<number> {
  const why = kernelTestsPossible();
  if (why) {
    process.stderr.write(`demo: ${why.replace('kernel tests', 'the demo')}\n`);
    return 1;
  }
  say(bold('nftproxy demo: a node, three pods, a client pod and an external host, in network namespaces'));
  const config = parseProxyConfig({ nodeName: 'node1', clusterCIDRs: ['10.244.0.0/16', 'fd00:244::/64'] });
  const { state, diagnostics } = await loadManifestDir(MANIFESTS);
  const result = compile(state, config);
  for (const d of [...diagnostics, ...result.diagnostics]) say(`  ${formatDiagnostic(d)}`);

  let t: Topology | undefined;
  const stops: (() => Promise<void>)[] = [];
  const cleanup = async () => {
    await Promise.all(stops.splice(0).map((s) => s()));
    await t?.destroy();
  };
  process.once('SIGINT', () => void cleanup().then(() => process.exit(130)));
  try {
    t = await createTopology(3);
    for (const p of t.pods) stops.push(await startEchoServer(p, { tcp: [8080], udp: [5353] }));

    say();
    say(bold('1. The cluster (demo/manifests)'));
    for (const e of result.entries) {
      const where = e.kind === 'nodePort' ? `NodePort ${e.port}` : `${e.address}:${e.port}`;
      const eps = e.backends.length
        ? e.backends.map((b) => formatHostPort(b.ip, b.port)).join(' ')
        : 'no endpoints: refused';
      say(`  ${e.service.padEnd(18)} ${e.kind.padEnd(10)} ${`${where}/${e.protocol}`.padEnd(22)} -> ${eps}`);
    }

    say();
    say(bold('2. nftproxy programs the node: one nft transaction'));
    const nft = new ExecBackend({ command: t.node.nftCommand });
    const caps = await nft.probe();
    if (caps.missing.length)
      throw new Error(`nft ${caps.version} lacks: ${caps.missing.map((m) => m.feature).join('; ')}`);
    const diff = diffRulesets(undefined, result.ruleset);
    const started = Date.now();
    await nft.apply(diff.tx);
    say(
      `  nft ${caps.version}: ${result.stats.services} services, ${result.stats.endpoints} backend slots, ${diff.stats.elementsAdded} map elements, applied in ${Date.now() - started} ms`,
    );
    const live = await t.node.run('nft', 'list', 'map', 'ip', 'nftproxy', 'service-ips');
    say(live.stdout.replace(/^/gm, '    '));

    say();
    say(bold('3. Traffic'));
    histogram(
      'client pod -> web ClusterIP 10.96.0.10:80, 60 TCP connections (random choice, client address kept):',
      await probe(t.client.ns, { host: '10.96.0.10', port: 80 }, 60),
    );
    histogram(
      'client pod -> web [fd00:96::10]:80, 30 TCP connections over IPv6:',
      await probe(t.client.ns, { host: 'fd00:96::10', port: 80 }, 30),
    );
    histogram(
      'external host -> node 192.168.50.1:30080 (NodePort), 30 connections (masqueraded to the node):',
      await probe(t.external, { host: t.nodeIP, port: 30080 }, 30),
    );
    histogram(
      'client pod -> dns 10.96.0.53:53/udp, 20 new flows:',
      await probe(t.client.ns, { host: '10.96.0.53', port: 53, protocol: 'udp' }, 20),
    );
    histogram(
      'client pod -> orders 10.96.0.20:80 (no endpoints), 5 connections, each refused at once:',
      await probe(t.client.ns, { host: '10.96.0.20', port: 80 }, 5),
    );
    histogram(
      'pod-a -> web ClusterIP: hairpin, pod-a reaching itself sees the node as the client:',
      await probe(t.pods[0]!.ns, { host: '10.96.0.10', port: 80 }, 30),
    );

    say();
    say(bold('4. nftproxy explain --from 192.168.50.2 --to 192.168.50.1:30080/tcp'));
    const local = localAddresses(state, config);
    const trace = new Tracer(result.ruleset, { localAddresses: local }).trace({
      saddr: '192.168.50.2',
      daddr: '192.168.50.1',
      dport: 30080,
      protocol: 'tcp',
      entry: 'external',
    });
    const owner = findEntry(result.entries, '192.168.50.1', 30080, 'tcp', new Set(local));
    say(formatTrace(trace, owner && ownerOfEntry(owner), false).replace(/^/gm, '  '));

    say(bold(`5. nftproxy status --netns ${t.node.name}: the live table, connections per endpoint`));
    say(formatStatus(servicesOf(await readLiveRuleset({ netns: t.node.name }))).replace(/^/gm, '  '));
    say(bold('Cleaning up: the namespaces, and the rules in them, are deleted.'));
    return 0;
  } finally {
    await cleanup();
  }
}

process.exitCode = await main();
