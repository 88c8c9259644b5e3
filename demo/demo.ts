/**
 * The nftproxy demo: a small cluster in network namespaces, with `nftproxy run` programming
 * the node from a directory of manifests (a copy of demo/manifests), real traffic, a
 * ProxyPolicy added while it runs, and what `nftproxy status` and `explain` see. Everything
 * it creates is removed at the end, also on failure or Ctrl-C. Run it with scripts/demo (as
 * root).
 */
import { cp, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { formatHostPort } from '../src/net/ip.js';
import { loadManifestDir } from '../src/k8s/manifests.js';
import { formatDiagnostic } from '../src/k8s/types.js';
import { compile } from '../src/proxy/compile.js';
import { parseProxyConfig } from '../src/proxy/config.js';
import { unitEndpoints } from '../src/proxy/service.js';
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
import { type LogLine, OperatorProcess } from '../test/support/operator.js';

const MANIFESTS = fileURLToPath(new URL('manifests', import.meta.url));
const BIN = fileURLToPath(new URL('../bin/nftproxy.js', import.meta.url));

/** The ProxyPolicy the demo adds while nftproxy runs. */
const POLICY = `# Added by the demo while nftproxy runs: web's connections go round robin.
apiVersion: nftproxy.dev/v1alpha1
kind: ProxyPolicy
metadata: { name: web-round-robin, namespace: shop }
spec:
  selector: { serviceNames: [web] }
  scheduler: { type: roundRobin }
`;

/** One `synced` log line, short. */
function syncLine(l: LogLine): string {
  const kind = l.full ? 'full sync' : 'partial sync';
  return `synced: ${kind} (${(l.reasons as string[]).join(', ')}), ${String(l.services)} services, ${String(l.commands)} nft commands, ${String(l.elementsAdded)} elements added, ${String(l.elementsDeleted)} deleted, ${String(l.durationMs)} ms`;
}
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
  let op: OperatorProcess | undefined;
  let dir: string | undefined;
  const stops: (() => Promise<void>)[] = [];
  const cleanup = async () => {
    await op?.kill();
    await Promise.all(stops.splice(0).map((s) => s()));
    await t?.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  };
  process.once('SIGINT', () => void cleanup().then(() => process.exit(130)));
  try {
    t = await createTopology(3);
    for (const p of t.pods) stops.push(await startEchoServer(p, { tcp: [8080], udp: [5353] }));
    dir = await mkdtemp(join(tmpdir(), 'nftproxy-demo-'));
    await cp(MANIFESTS, dir, { recursive: true });

    say();
    say(bold('1. The cluster (demo/manifests)'));
    for (const e of result.entries) {
      const where = e.kind === 'nodePort' ? `NodePort ${e.port}` : `${e.address}:${e.port}`;
      const backends = [...unitEndpoints(e)].map((ep) => ep.split('|') as [string, string]);
      const eps = backends.length
        ? backends.map(([ip, port]) => formatHostPort(ip, Number(port))).join(' ')
        : 'no endpoints: refused';
      say(`  ${e.service.padEnd(18)} ${e.kind.padEnd(10)} ${`${where}/${e.protocol}`.padEnd(22)} -> ${eps}`);
    }

    say();
    say(bold(`2. nftproxy run --manifests ${dir} --netns ${t.node.name}`));
    op = await OperatorProcess.start([
      '--manifests',
      dir,
      '--netns',
      t.node.name,
      '--node',
      'node1',
      '--cluster-cidr',
      '10.244.0.0/16',
      '--cluster-cidr',
      'fd00:244::/64',
      '--healthz-bind-address',
      '',
      '--metrics-bind-address',
      '',
    ]);
    say(`  ${syncLine(op.syncs()[0]!)}`);
    const live = await t.node.run('nft', 'list', 'map', 'ip', 'nftproxy', 'service-ips');
    say(live.stdout.replace(/^/gm, '    '));

    say();
    say(bold('3. Traffic'));
    histogram(
      'client pod -> web ClusterIP 10.96.0.10:80, 30 TCP connections (random choice, client address kept):',
      await probe(t.client.ns, { host: '10.96.0.10', port: 80 }, 30),
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
    say(bold('4. A ProxyPolicy, added while nftproxy runs: web goes round robin'));
    say(POLICY.trimEnd().replace(/^/gm, '    '));
    const from = op.logs.length;
    await writeFile(join(dir, 'web-policy.yaml'), POLICY);
    say(`  ${syncLine(await op.waitFor((l) => l.msg === 'synced', 15_000, from))}`);
    histogram(
      'client pod -> web ClusterIP 10.96.0.10:80, 30 TCP connections (round robin: 10 each):',
      await probe(t.client.ns, { host: '10.96.0.10', port: 80 }, 30),
    );

    say();
    say(bold('5. nftproxy explain --from 192.168.50.2 --to 192.168.50.1:30080/tcp (on the live table)'));
    const explained = await execa('node', [
      BIN,
      'explain',
      '--netns',
      t.node.name,
      '--from',
      '192.168.50.2',
      '--to',
      '192.168.50.1:30080/tcp',
    ]);
    say(explained.stdout.replace(/^/gm, '  '));

    say();
    say(bold(`6. nftproxy status --netns ${t.node.name}: the live table, connections per endpoint`));
    say(
      formatStatus(servicesOf(await readLiveRuleset({ netns: t.node.name })))
        .trimEnd()
        .replace(/^/gm, '  '),
    );
    say(bold('Cleaning up: nftproxy stopped, the namespaces and the rules in them deleted.'));
    return 0;
  } finally {
    await cleanup();
  }
}

process.exitCode = await main();
