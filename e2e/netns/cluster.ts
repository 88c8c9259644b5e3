/**
 * The e2e cluster in network namespaces: one node namespace (node1) with the client and the
 * echo pods on veths, an outside host, and `nftproxy run` as its own process, watching an
 * API server through a kubeconfig, as it does on a kind node. The API server is one of two:
 *
 * - `real`: kube-apiserver v1.20.2 with etcd (test/support/kube-apiserver.ts), with config/'s
 *   Namespace, CRDs and RBAC applied, and nftproxy authenticated as config/'s ServiceAccount
 *   by a TokenRequest token: what it may do is exactly what the ClusterRole grants. The server
 *   allocates ClusterIPs and NodePorts.
 * - `stand-in`: the test API stand-in (test/support/apiserver.ts), for machines without the
 *   real one; ClusterIPs and NodePorts are allocated here.
 *
 * Either way the rest of a control plane is played here, minimally: an EndpointSlice per
 * Service listing the pods its selector matches (pod-c is reported on node2, which has no
 * namespace of its own: node1 routes to it like to any pod, but nftproxy on node1 treats it as
 * remote), and a load balancer's ingress IP written into the Service status.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeApiServer } from '../../test/support/apiserver.js';
import { RealApiServer } from '../../test/support/kube-apiserver.js';
import { kustomizeBuild } from '../../test/support/kustomize.js';
import { createTopology, probe, probeFor, startEchoServer, type Topology } from '../../test/support/netns.js';
import { OperatorProcess } from '../../test/support/operator.js';
import {
  type E2ECluster,
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

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

type Obj = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
} & Record<string, unknown>;

/** What the cluster needs of an API server. */
interface ControlPlane {
  /** The kubeconfig nftproxy runs with. */
  kubeconfig(): Promise<string>;
  /** Writes the Service; returns its ClusterIP and NodePorts, allocated by whoever does. */
  writeService(svc: ServiceManifest): Promise<ServiceInfo>;
  write(obj: Obj): Promise<void>;
  setIngress(namespace: string, name: string, ip: string): Promise<void>;
  policyStatus(namespace: string, name: string): Promise<PolicyStatus | undefined>;
  stop(): Promise<void>;
}

const NODES = (nodeIP: string) =>
  [
    ['node1', nodeIP],
    ['node2', '192.168.50.3'],
  ] as const;

/** The test stand-in: allocates addresses itself. */
class StandIn implements ControlPlane {
  private readonly allocated = new Map<string, ServiceInfo>();
  private nextNodePort = 30100;

  private constructor(private readonly api: FakeApiServer) {}

  static async start(nodeIP: string): Promise<StandIn> {
    const api = new FakeApiServer();
    await api.start();
    for (const [name, ip] of NODES(nodeIP))
      api.apply({
        apiVersion: 'v1',
        kind: 'Node',
        metadata: { name },
        status: { addresses: [{ type: 'InternalIP', address: ip }] },
      });
    return new StandIn(api);
  }

  kubeconfig(): Promise<string> {
    return Promise.resolve(this.api.kubeConfig().exportConfig());
  }

  writeService(svc: ServiceManifest): Promise<ServiceInfo> {
    const key = `${svc.metadata.namespace}/${svc.metadata.name}`;
    const withNodePorts = svc.spec.type === 'NodePort' || svc.spec.type === 'LoadBalancer';
    const info = this.allocated.get(key) ?? {
      clusterIP: `10.96.100.${this.allocated.size + 1}`,
      nodePorts: withNodePorts
        ? Object.fromEntries(svc.spec.ports.map((p) => [p.name, this.nextNodePort++]))
        : {},
    };
    this.allocated.set(key, info);
    this.api.apply({
      ...svc,
      spec: {
        ...svc.spec,
        clusterIP: info.clusterIP,
        clusterIPs: [info.clusterIP],
        ipFamilies: ['IPv4'],
        ports: svc.spec.ports.map((p) => ({
          ...p,
          ...(withNodePorts ? { nodePort: info.nodePorts[p.name] } : {}),
        })),
      },
    });
    return Promise.resolve(info);
  }

  write(obj: Obj): Promise<void> {
    this.api.apply(obj);
    return Promise.resolve();
  }

  setIngress(namespace: string, name: string, ip: string): Promise<void> {
    const svc = this.api.get('Service', namespace, name)!;
    this.api.apply({ ...svc, kind: 'Service', status: { loadBalancer: { ingress: [{ ip }] } } });
    return Promise.resolve();
  }

  policyStatus(namespace: string, name: string): Promise<PolicyStatus | undefined> {
    return Promise.resolve(this.api.get('ProxyPolicy', namespace, name)?.status as PolicyStatus | undefined);
  }

  stop(): Promise<void> {
    return this.api.stop();
  }
}

/** config/'s ServiceAccount, as nftproxy runs in a cluster. */
const SERVICE_ACCOUNT = { namespace: 'nftproxy-system', name: 'nftproxy' };

/** A real kube-apiserver: allocates addresses; nftproxy runs as config/'s ServiceAccount. */
class Real implements ControlPlane {
  private constructor(readonly api: RealApiServer) {}

  static async start(nodeIP: string, namespace: string): Promise<Real> {
    const api = await RealApiServer.start();
    try {
      // The CRDs as a user installs them; then the rest of config/ but for the DaemonSet and
      // its ConfigMap (nftproxy runs here as a process of the test). kubectl 1.20 checks the
      // CRD against its own schema, which predates x-kubernetes-validations (CEL, 1.25+), so
      // it needs --validate=false; the server then drops those rules.
      await api.kubectl('apply', '--validate=false', '-k', 'crds/');
      await api.until(
        async () => (await api.get('/apis/nftproxy.dev/v1alpha1/proxypolicies')).status === 200,
        30_000,
        'ProxyPolicy CRD served',
      );
      for (const o of kustomizeBuild('config'))
        if (!['DaemonSet', 'ConfigMap', 'CustomResourceDefinition'].includes(o.kind))
          await api.apply(o as never);
      await api.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: namespace } });
      for (const [name, ip] of NODES(nodeIP)) {
        const node = { apiVersion: 'v1', kind: 'Node', metadata: { name } };
        const stored = await api.apply(node);
        // Status is the kubelet's: written through the status subresource.
        const r = await api.request('PUT', `/api/v1/nodes/${name}/status`, {
          ...stored,
          status: { addresses: [{ type: 'InternalIP', address: ip }] },
        });
        if (r.status !== 200) throw new Error(`node ${name} status: ${r.status} ${r.body}`);
      }
      return new Real(api);
    } catch (e) {
      await api.stop();
      throw e;
    }
  }

  /** A token for config/'s ServiceAccount (TokenRequest), in a kubeconfig. */
  async kubeconfig(): Promise<string> {
    const { namespace, name } = SERVICE_ACCOUNT;
    return (await this.api.serviceAccountKubeConfig(namespace, name)).exportConfig();
  }

  async writeService(svc: ServiceManifest): Promise<ServiceInfo> {
    const stored = (await this.api.apply(svc as never)) as unknown as {
      spec: { clusterIP: string; ports: { name: string; nodePort?: number }[] };
    };
    return {
      clusterIP: stored.spec.clusterIP,
      nodePorts: Object.fromEntries(
        stored.spec.ports.filter((p) => p.nodePort).map((p) => [p.name, p.nodePort!]),
      ),
    };
  }

  async write(obj: Obj): Promise<void> {
    await this.api.apply(obj as never);
  }

  async setIngress(namespace: string, name: string, ip: string): Promise<void> {
    const path = `/api/v1/namespaces/${namespace}/services/${name}`;
    const svc = JSON.parse((await this.api.request('GET', path)).body) as Record<string, unknown>;
    const r = await this.api.request('PUT', `${path}/status`, {
      ...svc,
      status: { loadBalancer: { ingress: [{ ip }] } },
    });
    if (r.status !== 200) throw new Error(`service status: ${r.status} ${r.body}`);
  }

  async policyStatus(namespace: string, name: string): Promise<PolicyStatus | undefined> {
    const r = await this.api.request(
      'GET',
      `/apis/nftproxy.dev/v1alpha1/namespaces/${namespace}/proxypolicies/${name}`,
    );
    if (r.status !== 200) return undefined;
    return (JSON.parse(r.body) as { status?: PolicyStatus }).status;
  }

  stop(): Promise<void> {
    return this.api.stop();
  }
}

/** Which API server the cluster runs against. */
export type ControlPlaneKind = 'real' | 'stand-in';

export class NetnsCluster implements E2ECluster {
  readonly node = 'node1';
  readonly otherNode = 'node2';
  readonly nodeIP: string;
  readonly clientIP: string;
  readonly externalIP: string;

  private constructor(
    private readonly t: Topology,
    private readonly cp: ControlPlane,
    private op: OperatorProcess,
    private readonly operatorArgs: string[],
    private readonly cleanups: (() => Promise<unknown>)[],
  ) {
    this.nodeIP = t.nodeIP;
    this.clientIP = t.client.ip;
    this.externalIP = t.externalIP;
  }

  /** Builds the namespaces, starts the pods' servers, the API server and the operator. */
  static async create(kind: ControlPlaneKind = 'stand-in'): Promise<NetnsCluster> {
    const cleanups: (() => Promise<unknown>)[] = [];
    const undo = async () => {
      for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
    };
    try {
      const t = await createTopology(PODS.length);
      cleanups.push(() => t.destroy());
      for (const p of t.pods) cleanups.push(await startEchoServer(p, { tcp: [8080], udp: [5353] }));
      const cp = kind === 'real' ? await Real.start(t.nodeIP, NAMESPACE) : await StandIn.start(t.nodeIP);
      cleanups.push(() => cp.stop());
      const dir = await mkdtemp(join(tmpdir(), 'nftproxy-e2e-'));
      cleanups.push(() => rm(dir, { recursive: true, force: true }));
      const kubeconfig = join(dir, 'kubeconfig');
      await writeFile(kubeconfig, await cp.kubeconfig());
      const args = [
        '--kubeconfig',
        kubeconfig,
        '--netns',
        t.node.name,
        '--node',
        'node1',
        '--cluster-cidr',
        '10.244.0.0/16',
        '--healthz-bind-address',
        '',
        '--metrics-bind-address',
        '',
        '--min-sync-interval',
        '20ms',
      ];
      const op = await OperatorProcess.start(args);
      const cluster = new NetnsCluster(t, cp, op, args, cleanups);
      cleanups.push(() => cluster.op.kill('SIGKILL'));
      return cluster;
    } catch (e) {
      await undo();
      throw e;
    }
  }

  /** The real API server, when the cluster runs against one. */
  get realApiServer(): RealApiServer | undefined {
    return this.cp instanceof Real ? this.cp.api : undefined;
  }

  async destroy(): Promise<void> {
    for (const c of this.cleanups.splice(0).reverse()) await c().catch(() => undefined);
  }

  /** Errors the operator logged (the suite asserts there are none). */
  errors(): string[] {
    return this.op.logs.filter((l) => l.level === 'error').map((l) => JSON.stringify(l));
  }

  /** The operator's log lines so far. */
  get logs() {
    return this.op.logs;
  }

  /**
   * Stops the operator (SIGTERM, as a rollout does: the rules stay) and starts a new one;
   * resolves once the new one synced.
   */
  async restartOperator(): Promise<void> {
    const old = this.op;
    await old.kill('SIGTERM');
    this.op = await OperatorProcess.start(this.operatorArgs); // resolves on its first sync
  }

  async applyService(svc: ServiceManifest): Promise<ServiceInfo> {
    const from = this.op.logs.length;
    const info = await this.cp.writeService(svc);
    await this.cp.write(this.sliceFor(svc, podsMatching(svc.spec.selector)));
    await this.settle(from);
    return info;
  }

  /** Rewrites a Service's EndpointSlice to list these pods (a pod added or gone). */
  async setEndpoints(svc: ServiceManifest, pods: string[]): Promise<void> {
    const from = this.op.logs.length;
    await this.cp.write(this.sliceFor(svc, pods));
    await this.settle(from);
  }

  private sliceFor(svc: ServiceManifest, pods: string[]): Obj {
    const { name, namespace } = svc.metadata;
    return {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: `${name}-e2e`, namespace, labels: { 'kubernetes.io/service-name': name } },
      addressType: 'IPv4',
      ports: svc.spec.ports.map((p) => ({ name: p.name, port: p.targetPort, protocol: p.protocol })),
      endpoints: pods.map((pod) => ({
        addresses: [this.t.pods[PODS.findIndex((p) => p.name === pod)]!.ip],
        conditions: { ready: true, serving: true, terminating: false },
        nodeName: PODS.find((p) => p.name === pod)!.onOtherNode ? this.otherNode : this.node,
        targetRef: { kind: 'Pod', name: pod, namespace },
      })),
    };
  }

  async setLoadBalancerIngress(namespace: string, name: string, ip: string): Promise<void> {
    const from = this.op.logs.length;
    await this.cp.setIngress(namespace, name, ip);
    await this.t.external.run('ip', 'route', 'replace', `${ip}/32`, 'via', this.nodeIP);
    await this.settle(from);
  }

  async applyPolicy(policy: PolicyManifest): Promise<void> {
    const from = this.op.logs.length;
    await this.cp.write({ ...policy, metadata: { ...policy.metadata } });
    await this.settle(from);
  }

  /** Writes a ProxyPolicy without waiting for a sync (an invalid one causes none). */
  writePolicy(policy: PolicyManifest): Promise<void> {
    return this.cp.write({ ...policy, metadata: { ...policy.metadata } });
  }

  policyStatus(namespace: string, name: string): Promise<PolicyStatus | undefined> {
    return this.cp.policyStatus(namespace, name);
  }

  request(from: From, to: Target, count: number, timeoutMs = 2000) {
    return probe(from === 'client' ? this.t.client.ns : this.t.external, to, count, timeoutMs);
  }

  /** New connections from the client every `intervalMs` for `durationMs`. */
  requestFor(to: Target, durationMs: number, intervalMs = 50) {
    return probeFor(this.t.client.ns, to, { durationMs, intervalMs });
  }

  /** Waits for a sync after log line `from`, then until syncs stop for a moment. */
  private async settle(from: number): Promise<void> {
    await this.op.waitFor((l) => l.msg === 'synced', 15_000, from);
    for (;;) {
      const seen = this.op.logs.length;
      await sleep(200);
      if (!this.op.logs.slice(seen).some((l) => l.msg === 'synced')) return;
    }
  }
}
