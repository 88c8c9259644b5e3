/**
 * Reading manifests: valid objects in any layout, and one clear message per bad object
 * naming it and the field, the rest still loaded.
 */
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadManifestDir, parseManifests } from '../../src/k8s/manifests.js';
import { formatDiagnostic } from '../../src/k8s/types.js';

const svc = (name: string, body: string) => `apiVersion: v1
kind: Service
metadata:
  name: ${name}
  namespace: default
spec:
${body}
`;

const GOOD = svc('good', '  clusterIP: 10.96.0.1\n  ports: [{ port: 80 }]');

function load(...texts: string[]) {
  return parseManifests(texts.map((text, i) => ({ name: `f${i}.yaml`, text })));
}

function errorsOf(...texts: string[]): string[] {
  return load(...texts)
    .diagnostics.filter((d) => d.severity === 'error')
    .map(formatDiagnostic);
}

describe('manifests', () => {
  it('parses a Service with defaults filled in', () => {
    const { state, diagnostics } = load(GOOD);
    assert.deepEqual(diagnostics, []);
    const s = state.services[0]!;
    assert.equal(s.type, 'ClusterIP');
    assert.deepEqual(s.clusterIPs, ['10.96.0.1']);
    assert.deepEqual(s.ports, [{ name: '', protocol: 'TCP', port: 80, targetPort: 80 }]);
    assert.equal(s.externalTrafficPolicy, 'Cluster');
  });

  it('reads multi-document files, List kinds and JSON, and ignores other kinds', () => {
    const list = JSON.stringify({
      apiVersion: 'v1',
      kind: 'List',
      items: [
        {
          apiVersion: 'v1',
          kind: 'Node',
          metadata: { name: 'n1' },
          status: {
            addresses: [
              { type: 'InternalIP', address: '192.168.1.1' },
              { type: 'Hostname', address: 'n1' },
            ],
          },
        },
      ],
    });
    const deployment = 'apiVersion: apps/v1\nkind: Deployment\nmetadata: { name: x }\n';
    const { state, diagnostics } = load(`${GOOD}---\n${deployment}---\n`, list);
    assert.deepEqual(diagnostics, []);
    assert.equal(state.services.length, 1);
    assert.deepEqual(state.nodes[0]!.addresses, [{ type: 'InternalIP', address: '192.168.1.1' }]);
  });

  it('ignores kinds named like Object properties without a word', () => {
    const { state, diagnostics } = load('apiVersion: v1\nkind: constructor\nmetadata: { name: x }\n', GOOD);
    assert.deepEqual(diagnostics, []);
    assert.equal(state.services.length, 1);
  });

  it('canonicalises addresses to the form nft prints', () => {
    const { state } = load(svc('v6', '  clusterIPs: ["FD00:0:0:0::10"]\n  ports: [{ port: 80 }]'));
    assert.deepEqual(state.services[0]!.clusterIPs, ['fd00::10']);
  });

  it('parses an EndpointSlice, applying condition defaults and using the first address', () => {
    const { state, diagnostics } = load(`apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: s1, labels: { kubernetes.io/service-name: good } }
addressType: IPv4
ports: [{ name: http, port: 8080 }]
endpoints:
  - addresses: [10.244.1.1, 10.244.9.9]
  - addresses: [10.244.1.2]
    conditions: { ready: false, serving: true, terminating: true }
    nodeName: n1
`);
    assert.deepEqual(diagnostics, []);
    const sl = state.endpointSlices[0]!;
    assert.equal(sl.serviceName, 'good');
    assert.deepEqual(sl.ports, [{ name: 'http', protocol: 'TCP', port: 8080 }]);
    assert.deepEqual(sl.endpoints[0], {
      address: '10.244.1.1',
      conditions: { ready: true, serving: true, terminating: false },
      // Every field is written, undefined when absent (one shape for all endpoints).
      nodeName: undefined,
      zone: undefined,
      hostname: undefined,
      targetName: undefined,
      hints: undefined,
    });
    assert.deepEqual(sl.endpoints[1]!.conditions, { ready: false, serving: true, terminating: true });
    assert.equal(sl.endpoints[1]!.nodeName, 'n1');
  });

  describe('bad input: one message per object, naming it and the field; the rest still loads', () => {
    const cases: [string, string, RegExp][] = [
      [
        'a port out of range',
        svc('bad', '  clusterIP: 10.96.0.2\n  ports: [{ port: 70000 }]'),
        /Service default\/bad: spec\.ports\[0\]\.port: not a valid port number \(1-65535\): 70000/,
      ],
      [
        'a port that is a string',
        svc('bad', '  clusterIP: 10.96.0.2\n  ports: [{ port: "http-x" }]'),
        /spec\.ports\[0\]\.port: not a valid port number \(1-65535\): "http-x"/,
      ],
      [
        'a protocol named like an Object property',
        svc('bad', '  clusterIP: 10.96.0.2\n  ports: [{ port: 80, protocol: constructor }]'),
        /spec\.ports\[0\]\.protocol: unknown protocol "constructor"/,
      ],
      [
        'an invalid source range',
        svc(
          'bad',
          '  type: LoadBalancer\n  clusterIP: 10.96.0.2\n  loadBalancerSourceRanges: [10.0.0.0/33]\n  ports: [{ port: 80 }]',
        ),
        /spec\.loadBalancerSourceRanges\[0\]: not a valid CIDR: "10\.0\.0\.0\/33"/,
      ],
      [
        'an unknown protocol',
        svc('bad', '  clusterIP: 10.96.0.2\n  ports: [{ port: 80, protocol: ICMP }]'),
        /spec\.ports\[0\]\.protocol: unknown protocol "ICMP"/,
      ],
      [
        'an invalid cluster IP',
        svc('bad', '  clusterIP: 10.96.0.300\n  ports: [{ port: 80 }]'),
        /spec\.clusterIP: not a valid IP address: "10\.96\.0\.300"/,
      ],
      [
        'an invalid external IP',
        svc('bad', '  clusterIP: 10.96.0.2\n  externalIPs: [nope]\n  ports: [{ port: 80 }]'),
        /spec\.externalIPs\[0\]: not a valid IP address: "nope"/,
      ],
      ['a missing cluster IP', svc('bad', '  ports: [{ port: 80 }]'), /spec\.clusterIP: is required/],
      ['missing ports', svc('bad', '  clusterIP: 10.96.0.2'), /spec\.ports: is required/],
      [
        'a missing name',
        'apiVersion: v1\nkind: Service\nmetadata: {}\nspec: { clusterIP: 10.96.0.2, ports: [{ port: 80 }] }\n',
        /Service default\/<unnamed>: metadata\.name: is required/,
      ],
      [
        'an unknown type',
        svc('bad', '  type: Magic\n  clusterIP: 10.96.0.2\n  ports: [{ port: 80 }]'),
        /spec\.type: must be one of ClusterIP, NodePort, LoadBalancer, ExternalName, got "Magic"/,
      ],
      [
        'an unnamed port among several',
        svc('bad', '  clusterIP: 10.96.0.2\n  ports: [{ name: a, port: 80 }, { port: 81 }]'),
        /spec\.ports\[1\]\.name: is required when a service has more than one port/,
      ],
      [
        'a nodePort on a ClusterIP service',
        svc('bad', '  clusterIP: 10.96.0.2\n  ports: [{ port: 80, nodePort: 30000 }]'),
        /spec\.ports\[0\]\.nodePort: may only be set on NodePort and LoadBalancer services/,
      ],
      [
        'a bad endpoint address',
        'apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: { name: s, labels: { kubernetes.io/service-name: good } }\naddressType: IPv4\nendpoints: [{ addresses: [fd00::1] }]\n',
        /EndpointSlice default\/s: endpoints\[0\]\.addresses\[0\]: "fd00::1" is not an IPv4 address/,
      ],
      [
        'a slice without its service label',
        'apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: { name: s }\naddressType: IPv4\nendpoints: []\n',
        /EndpointSlice default\/s: metadata\.labels\["kubernetes\.io\/service-name"\]: is required/,
      ],
      ['a document that is not an object', '- just\n- a list\n', /document: not a Kubernetes object/],
      [
        'a document without kind',
        'metadata: { name: x }\n',
        /document: not a Kubernetes object: kind and apiVersion are required/,
      ],
    ];
    for (const [what, text, want] of cases) {
      it(`reports ${what}`, () => {
        const { state, diagnostics } = load(text, GOOD);
        const errors = diagnostics.filter((d) => d.severity === 'error');
        assert.equal(errors.length, 1, errors.map(formatDiagnostic).join('\n'));
        assert.match(formatDiagnostic(errors[0]!), want);
        assert.match(errors[0]!.origin!, /^f0\.yaml:\d+/);
        assert.deepEqual(
          state.services.map((s) => s.metadata.name),
          ['good'],
          'the valid object still loads, the bad one does not',
        );
      });
    }

    it('reports unparseable YAML with its line and keeps the other files', () => {
      const { state, diagnostics } = load('kind: Service\n  bad: [indent\n', GOOD);
      assert.equal(diagnostics.length, 1);
      assert.match(
        formatDiagnostic(diagnostics[0]!),
        /error: document: unparseable YAML: .*\(f0\.yaml:\d+:\d+\)/,
      );
      assert.equal(state.services.length, 1);
    });

    it('reports every bad field of one object', () => {
      const errors = errorsOf(svc('bad', '  clusterIP: x\n  ports: [{ port: 0, protocol: FOO }]'));
      assert.equal(errors.length, 3);
    });

    it('keeps the first of two objects with the same name', () => {
      const errors = errorsOf(GOOD, GOOD);
      assert.equal(errors.length, 1);
      assert.match(errors[0]!, /Service default\/good: defined twice; keeping the one in f0\.yaml:1/);
    });

    it('warns about, and ignores, a known kind of another apiVersion', () => {
      const { state, diagnostics } = load(GOOD.replace('apiVersion: v1', 'apiVersion: v2'));
      assert.equal(state.services.length, 0);
      assert.equal(diagnostics[0]!.severity, 'warning');
    });
  });

  it('follows the symlinks of a ConfigMap volume', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'nftproxy-cm-'));
    try {
      await mkdir(join(dir, '..2026_11_22'));
      await writeFile(join(dir, '..2026_11_22', 'svc.yaml'), GOOD);
      await symlink('..2026_11_22', join(dir, '..data'));
      await symlink(join('..data', 'svc.yaml'), join(dir, 'svc.yaml'));
      const { state } = await loadManifestDir(dir);
      assert.deepEqual(
        state.services.map((s) => s.metadata.name),
        ['good'],
        'read once, through the visible link',
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('loads a directory tree, skipping hidden entries and non-manifest files', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'nftproxy-manifests-'));
    try {
      await mkdir(join(dir, 'a', 'b'), { recursive: true });
      await mkdir(join(dir, '.git'));
      await writeFile(join(dir, 'a', 'b', 'svc.yml'), GOOD);
      await writeFile(
        join(dir, 'a', 'other.json'),
        JSON.stringify({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'n' } }),
      );
      await writeFile(join(dir, '.git', 'x.yaml'), GOOD.replace('good', 'hidden'));
      await writeFile(join(dir, 'README.md'), '# not a manifest');
      const { state, files, diagnostics } = await loadManifestDir(dir);
      assert.deepEqual(diagnostics, []);
      assert.equal(files.length, 2);
      assert.deepEqual(
        state.services.map((s) => s.metadata.name),
        ['good'],
      );
      assert.equal(state.nodes.length, 1);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
