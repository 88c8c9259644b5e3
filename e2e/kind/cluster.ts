/**
 * The e2e cluster on kind: the cluster `nftproxy-e2e` that kind/up creates (kube-proxy
 * disabled, nftproxy deployed from config/ through kind/overlay). The suite deploys its own
 * pods in the namespace `e2e`: echo servers and a client running the same programs as the
 * namespace suite (test/support/echo-server.ts and probe.ts, compiled to JavaScript with
 * esbuild and mounted from a ConfigMap into node:22-alpine), and an outside host: a
 * container on kind's Docker network that is not a node.
 */
import { readFile } from 'node:fs/promises';
import { transform } from 'esbuild';
import { execa } from 'execa';
import type { ProbeResult } from '../../test/support/netns.js';
import {
  type E2ECluster,
  eventually,
  type From,
  NAMESPACE,
  PODS,
  podsMatching,
  type PolicyManifest,
  type PolicyStatus,
  type ServiceInfo,
  type ServiceManifest,
  type Target,
} from '../cluster.js';

export const CLUSTER = 'nftproxy-e2e';
const CONTEXT = `kind-${CLUSTER}`;
const EXTERNAL = `${CLUSTER}-external`;
const IMAGE = 'node:22-alpine';
const NODE = `${CLUSTER}-worker`;
const OTHER_NODE = `${CLUSTER}-worker2`;

const kubectl = (args: string[], input?: string) =>
  execa('kubectl', ['--context', CONTEXT, ...args], input === undefined ? {} : { input });
const docker = (...args: string[]) => execa('docker', args);

/** Why the kind suite cannot run here, or undefined when it can. */
export async function kindUnavailable(): Promise<string | undefined> {
  const ok = async (file: string, args: string[]) =>
    (await execa(file, args, { reject: false, timeout: 20_000 }).catch(() => ({ exitCode: 1 }))).exitCode ===
    0;
  if (!(await ok('docker', ['info'])))
    return 'no Docker engine here; the same scenarios run in e2e/netns (network namespaces), part of scripts/test';
  for (const tool of ['kind', 'kubectl'])
    if (!(await ok(tool, ['version', ...(tool === 'kubectl' ? ['--client'] : [])])))
      return `${tool} is not installed; kind/e2e (or the e2e-kind workflow) needs it`;
  const clusters = await execa('kind', ['get', 'clusters'], { reject: false });
  if (!clusters.stdout.split('\n').includes(CLUSTER))
    return `no kind cluster ${CLUSTER}: run kind/e2e, which creates it, deploys nftproxy and runs this suite`;
  return undefined;
}

async function compiled(file: string): Promise<string> {
  const source = await readFile(new URL(`../../test/support/${file}`, import.meta.url), 'utf8');
  return (await transform(source, { loader: 'ts', format: 'esm', target: 'node20' })).code;
}

const pod = (name: string, node: string, labels: Record<string, string>, command: string[]) => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, namespace: NAMESPACE, labels },
  spec: {
    nodeName: node,
    terminationGracePeriodSeconds: 1,
    containers: [
      {
        name: 'main',
        image: IMAGE,
        command,
        volumeMounts: [{ name: 'e2e', mountPath: '/e2e' }],
        ...(labels.app === 'echo' ? { readinessProbe: { tcpSocket: { port: 8080 }, periodSeconds: 1 } } : {}),
      },
    ],
    volumes: [{ name: 'e2e', configMap: { name: 'e2e-programs' } }],
  },
});

export class KindCluster implements E2ECluster {
  readonly node = NODE;
  readonly otherNode = OTHER_NODE;

  private constructor(
    readonly nodeIP: string,
    readonly clientIP: string,
    readonly externalIP: string,
  ) {}

  /** Deploys the pods and the outside host; resolves when all are ready. */
  static async create(): Promise<KindCluster> {
    await KindCluster.cleanup();
    await kubectl(['create', 'namespace', NAMESPACE]);
    const probe = await compiled('probe.ts');
    const objects = [
      {
        apiVersion: 'v1',
        kind: 'ConfigMap',
        metadata: { name: 'e2e-programs', namespace: NAMESPACE },
        data: { 'echo-server.mjs': await compiled('echo-server.ts'), 'probe.mjs': probe },
      },
      ...PODS.map((p) =>
        pod(p.name, p.onOtherNode ? OTHER_NODE : NODE, p.labels, [
          'node',
          '/e2e/echo-server.mjs',
          '--name',
          p.name,
          '--tcp',
          '8080',
          '--udp',
          '5353',
        ]),
      ),
      pod('client', NODE, { app: 'client' }, ['sleep', 'infinity']),
    ];
    await kubectl(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objects }));
    await kubectl(['wait', '-n', NAMESPACE, '--for=condition=Ready', 'pod', '--all', '--timeout=300s']);
    const clientIP = (
      await kubectl(['get', 'pod', '-n', NAMESPACE, 'client', '-o', 'jsonpath={.status.podIP}'])
    ).stdout;
    const nodeIP = (
      await kubectl([
        'get',
        'node',
        NODE,
        '-o',
        'jsonpath={.status.addresses[?(@.type=="InternalIP")].address}',
      ])
    ).stdout;

    await docker(
      'run',
      '-d',
      '--rm',
      '--name',
      EXTERNAL,
      '--network',
      'kind',
      '--cap-add',
      'NET_ADMIN',
      IMAGE,
      'sleep',
      'infinity',
    );
    await execa('docker', ['exec', '-i', EXTERNAL, 'sh', '-c', 'cat > /probe.mjs'], { input: probe });
    const externalIP = (
      await docker('inspect', '-f', '{{.NetworkSettings.Networks.kind.IPAddress}}', EXTERNAL)
    ).stdout.trim();
    return new KindCluster(nodeIP.split(' ')[0]!, clientIP, externalIP);
  }

  /** Removes what `create` made (also left over from an interrupted run). */
  static async cleanup(): Promise<void> {
    await kubectl([
      'delete',
      'namespace',
      NAMESPACE,
      '--ignore-not-found',
      '--wait=true',
      '--timeout=120s',
    ]).catch(() => undefined);
    await execa('docker', ['rm', '-f', EXTERNAL], { reject: false });
  }

  async applyService(svc: ServiceManifest): Promise<ServiceInfo> {
    await kubectl(['apply', '-f', '-'], JSON.stringify(svc));
    const { name, namespace } = svc.metadata;
    const want = podsMatching(svc.spec.selector).length;
    await eventually(async () => {
      const slices = JSON.parse(
        (
          await kubectl([
            'get',
            'endpointslices',
            '-n',
            namespace,
            '-l',
            `kubernetes.io/service-name=${name}`,
            '-o',
            'json',
          ])
        ).stdout,
      ) as { items: { endpoints?: { conditions?: { ready?: boolean } }[] }[] };
      const ready = slices.items.flatMap((s) => s.endpoints ?? []).filter((e) => e.conditions?.ready).length;
      if (ready !== want) throw new Error(`${namespace}/${name}: ${ready} of ${want} endpoints ready`);
    }, 120_000);
    const got = JSON.parse(
      (await kubectl(['get', 'service', '-n', namespace, name, '-o', 'json'])).stdout,
    ) as {
      spec: { clusterIP: string; ports: { name: string; nodePort?: number }[] };
    };
    return {
      clusterIP: got.spec.clusterIP,
      nodePorts: Object.fromEntries(
        got.spec.ports.filter((p) => p.nodePort).map((p) => [p.name, p.nodePort!]),
      ),
    };
  }

  async setLoadBalancerIngress(namespace: string, name: string, ip: string): Promise<void> {
    const patch = JSON.stringify({ status: { loadBalancer: { ingress: [{ ip }] } } });
    await kubectl([
      'patch',
      'service',
      '-n',
      namespace,
      name,
      '--subresource=status',
      '--type=merge',
      '-p',
      patch,
    ]);
    await docker('exec', EXTERNAL, 'ip', 'route', 'replace', `${ip}/32`, 'via', this.nodeIP);
  }

  async applyPolicy(policy: PolicyManifest): Promise<void> {
    await kubectl(['apply', '-f', '-'], JSON.stringify(policy));
  }

  async policyStatus(namespace: string, name: string): Promise<PolicyStatus | undefined> {
    const r = await kubectl(['get', 'proxypolicies.nftproxy.dev', '-n', namespace, name, '-o', 'json']);
    return (JSON.parse(r.stdout) as { status?: PolicyStatus }).status;
  }

  async request(from: From, to: Target, count: number, timeoutMs = 2000): Promise<ProbeResult[]> {
    const args = ['--host', to.host, '--port', String(to.port), '--protocol', to.protocol ?? 'tcp'];
    args.push('--count', String(count), '--timeout', String(timeoutMs));
    const r =
      from === 'client'
        ? await kubectl(['exec', '-n', NAMESPACE, 'client', '--', 'node', '/e2e/probe.mjs', ...args])
        : await docker('exec', EXTERNAL, 'node', '/probe.mjs', ...args);
    return JSON.parse(r.stdout) as ProbeResult[];
  }

  /** nftproxy's logs on every node, for a failed run. */
  static async logs(): Promise<string> {
    const r = await kubectl([
      'logs',
      '-n',
      'nftproxy-system',
      '-l',
      'app.kubernetes.io/name=nftproxy',
      '--tail=200',
      '--prefix',
    ]).catch((e: Error) => ({ stdout: e.message }));
    return r.stdout;
  }
}
