/**
 * The CLI's commands, output and exit codes, run in this process through main(argv) as
 * bin/nftproxy.js calls it (test/cli/bin.test.ts runs the bin itself).
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runCli } from '../support/cli.js';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const BASIC = here('../fixtures/clusters/basic');
const NODE = ['--node', 'node1', '--cluster-cidr', '10.244.0.0/16,fd00:244::/48'];

/** `explain` on the basic fixture cluster, with `args` added. */
const explain = (...args: string[]) => run('explain', '--manifests', BASIC, ...NODE, ...args);

function run(...args: string[]) {
  return runCli(args, { NODE_NAME: undefined });
}

describe('nftproxy CLI', function () {
  this.timeout(30_000);

  it('prints help', async () => {
    const r = await run('--help');
    assert.equal(r.exitCode, 0);
    assert.match(r.stdout, /render/);
    assert.match(r.stdout, /explain/);
  });

  describe('render', () => {
    it('prints the same script as the golden file', async () => {
      const r = await run('render', '--manifests', BASIC, ...NODE);
      assert.equal(r.exitCode, 0, r.stderr);
      assert.equal(r.stdout, await readFile(here('../golden/basic.nft'), 'utf8'));
    });

    it('prints the JSON IR with -o json', async () => {
      const r = await run('render', '--manifests', BASIC, ...NODE, '-o', 'json');
      assert.equal(r.exitCode, 0, r.stderr);
      const doc = JSON.parse(r.stdout) as { nftables: object[] };
      assert.ok(doc.nftables.some((o) => 'map' in o));
    });

    it('renders what it can and names each bad object on stderr', async () => {
      const r = await run('render', '--manifests', here('../fixtures/clusters/mixed'), '--node', 'node1');
      assert.equal(r.exitCode, 0);
      assert.match(r.stdout, /10\.96\.1\.1 \. tcp \. 80 : goto pick-random-1/);
      assert.match(r.stderr, /error: Service default\/bad-port: spec\.ports\[0\]\.port/);
      assert.match(r.stderr, /error: document: unparseable YAML/);
    });

    it('fails when nothing usable was found', async () => {
      const r = await run('render', '--manifests', here('../fixtures/clusters/broken'), '--node', 'node1');
      assert.equal(r.exitCode, 2);
      assert.match(r.stderr, /error: Service default\/only-bad/);
      assert.match(r.stderr, /no valid Service found/);
      assert.equal(r.stdout, '');
    });

    it('rejects bad flags with a clear message', async () => {
      let r = await run('render', '--manifests', '/nonexistent', '--node', 'node1');
      assert.equal(r.exitCode, 2);
      assert.match(r.stderr, /--manifests: not a directory: \/nonexistent/);
      r = await run('render', '--manifests', BASIC, '--node', 'node1', '--cluster-cidr', '10.0.0.0/40');
      assert.equal(r.exitCode, 2);
      assert.match(r.stderr, /cluster CIDR: not a valid CIDR: "10\.0\.0\.0\/40"/);
      r = await run('render', '--manifests', BASIC);
      assert.equal(r.exitCode, 2);
      assert.match(r.stderr, /node name: required/);
    });
  });

  describe('explain', () => {
    it('lists the endpoints a pod reaches through a ClusterIP', async () => {
      const r = await explain('--from', '10.244.1.50', '--to', '10.96.0.10:80/tcp');
      assert.equal(r.exitCode, 0, r.stderr);
      assert.match(r.stdout, /service {2}shop\/web port "http" \(clusterIP\)/);
      assert.match(r.stdout, /DNAT to one of 3 endpoints/);
      for (const ep of ['10.244.1.10:8080', '10.244.1.11:8080', '10.244.2.10:8080'])
        assert.match(r.stdout, new RegExp(`${ep.replace(/\./g, '\\.')} +[\\d.]+% +source address kept`));
      assert.doesNotMatch(r.stdout, /10\.244\.2\.11/, 'not-ready endpoint');
    });

    it("infers the entry point: the node's own address is the host", async () => {
      const r = await explain('--from', '192.168.50.1', '--to', '10.96.0.10:80');
      assert.match(r.stdout, /from a process on the node itself/);
      assert.match(r.stdout, /masqueraded/);
    });

    it('says why a packet is refused', async () => {
      const r = await explain('--from', '192.168.50.2', '--to', '192.168.50.1:30090');
      assert.match(r.stdout, /verdict {2}REJECT with tcp reset: the service port has no usable endpoints/);
      const u = await explain('--from', '10.244.1.50', '--to', '10.96.0.53:54/udp');
      assert.match(u.stdout, /REJECT with icmp port-unreachable: this ClusterIP has no such port/);
    });

    it('traces IPv6 and prints JSON for machines', async () => {
      const r = await explain('--from', 'fd00:244::5', '--to', '[fd00:96::10]:80', '-o', 'json');
      assert.equal(r.exitCode, 0, r.stderr);
      const doc = JSON.parse(r.stdout) as { endpoints: string[]; service: { service: string } };
      assert.deepEqual(doc.endpoints, ['[fd00:244:1::10]:8080']);
      assert.equal(doc.service.service, 'shop/web');
    });

    it('rejects a malformed destination', async () => {
      const r = await explain('--from', '10.244.1.50', '--to', '10.96.0.10');
      assert.equal(r.exitCode, 2);
      assert.match(r.stderr, /--to: want IP:PORT/);
    });
  });

  describe('inspection flags', () => {
    it('explain on the live table refuses node flags, which only describe manifests', async () => {
      const r = await run('explain', '--from', '10.244.1.50', '--to', '10.96.0.10:80', ...NODE);
      assert.equal(r.exitCode, 2);
      assert.match(r.stderr, /node flags describe what --manifests compiles to/);
    });

    it('status, diff and conntrack refuse an unknown output format', async () => {
      for (const args of [['status'], ['diff', '--manifests', BASIC, ...NODE], ['conntrack']]) {
        const r = await run(...args, '-o', 'yaml');
        assert.equal(r.exitCode, 2, args.join(' '));
        assert.match(r.stderr, /--output: want text or json, got "yaml"/);
      }
    });

    it('diff takes one source', async () => {
      const r = await run('diff', '--manifests', BASIC, '--kubeconfig', '/nonexistent', ...NODE);
      assert.equal(r.exitCode, 2);
      assert.match(r.stderr, /choose one source/);
    });
  });

  describe('run', () => {
    it('without any kubeconfig: one line saying where it looked, exit 2, before touching the kernel', async () => {
      const home = await mkdtemp(join(tmpdir(), 'nftproxy-home-'));
      try {
        const r = await runCli(['run', '--node', 'n1'], {
          HOME: home,
          KUBERNETES_SERVICE_HOST: undefined,
          KUBECONFIG: undefined,
        });
        assert.equal(r.exitCode, 2, r.stderr);
        assert.equal(
          r.stderr.trim(),
          `nftproxy: no API server to talk to; tried: --kubeconfig (not given), the in-cluster config (KUBERNETES_SERVICE_HOST not set: not in a pod), $KUBECONFIG (not set), ${home}/.kube/config (absent). Give --kubeconfig FILE, or --manifests DIR to read the cluster from files`,
        );
        const missing = await runCli(['run', '--node', 'n1', '--kubeconfig', '/nonexistent/kc']);
        assert.equal(missing.exitCode, 2);
        assert.equal(missing.stderr.trim(), 'nftproxy: --kubeconfig /nonexistent/kc: no such file');
      } finally {
        await rm(home, { recursive: true, force: true });
      }
    });
  });
});
