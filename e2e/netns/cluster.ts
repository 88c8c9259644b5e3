/**
 * The e2e cluster in network namespaces: one node namespace (node1) with the client and the
 * echo pods on veths, an outside host, and `nftproxy run` as its own process, watching the
 * test API stand-in through a kubeconfig, as it watches a real API server on a kind node.
 *
 * What a real cluster's control plane does is done here, minimally: Services get a ClusterIP
 * and NodePorts, and an EndpointSlice listing the pods their selector matches (pod-c is
 * reported on node2, which has no namespace of its own: node1 routes to it like to any pod,
 * but nftproxy on node1 treats it as remote).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeApiServer } from '../../test/support/apiserver.js';
import { createTopology, probe, startEchoServer, type Topology } from '../../test/support/netns.js';
import { OperatorProcess } from '../../test/support/operator.js';
import {
  type E2ECluster,
  type From,
  PODS,
  podsMatching,
  type PolicyManifest,
  type PolicyStatus,
  type ServiceInfo,
  type ServiceManifest,
  type Target,
} from '../cluster.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class NetnsCluster implements E2ECluster {
  readonly node = 'node1';
  readonly otherNode = 'node2';
  readonly nodeIP: string;
  readonly clientIP: string;
  readonly externalIP: string;
  private readonly allocated = new Map<string, ServiceInfo>();
  private nextNodePort = 30100;

  private constructor(
    private readonly t: Topology,
    private readonly api: FakeApiServer,
    private readonly op: OperatorProcess,
    private readonly cleanups: (() => Promise<unknown>)[],
  ) {
    this.nodeIP = t.nodeIP;
    this.clientIP = t.client.ip;
    this.externalIP = t.externalIP;
  }

  /** Builds the namespaces, starts the pods' servers, the API stand-in and the operator. */
  static async create(): Promise<NetnsCluster> {
    const cleanups: (() => Promise<unknown>)[] = [];
    const undo = async () => {
      for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
    };
    try {
      const t = await createTopology(PODS.length);
      cleanups.push(() => t.destroy());
      for (const p of t.pods) cleanups.push(await startEchoServer(p, { tcp: [8080], udp: [5353] }));
      const api = new FakeApiServer();
      await api.start();
      cleanups.push(() => api.stop());
      for (const [name, ip] of [
        ['node1', t.nodeIP],
        ['node2', '192.168.50.3'],
      ] as const)
        api.apply({
          apiVersion: 'v1',
          kind: 'Node',
          metadata: { name },
          status: { addresses: [{ type: 'InternalIP', address: ip }] },
        });
      const dir = await mkdtemp(join(tmpdir(), 'nftproxy-e2e-'));
      cleanups.push(() => rm(dir, { recursive: true, force: true }));
      const kubeconfig = join(dir, 'kubeconfig');
      await writeFile(kubeconfig, api.kubeConfig().exportConfig());
      const op = await OperatorProcess.start([
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
      ]);
      cleanups.push(() => op.kill('SIGKILL'));
      return new NetnsCluster(t, api, op, cleanups);
    } catch (e) {
      await undo();
      throw e;
    }
  }

  async destroy(): Promise<void> {
    for (const c of this.cleanups.splice(0).reverse()) await c().catch(() => undefined);
  }

  /** Errors the operator logged (the suite asserts there are none). */
  errors(): string[] {
    return this.op.logs.filter((l) => l.level === 'error').map((l) => JSON.stringify(l));
  }

  async applyService(svc: ServiceManifest): Promise<ServiceInfo> {
    const { name, namespace } = svc.metadata;
    const key = `${namespace}/${name}`;
    const withNodePorts = svc.spec.type === 'NodePort' || svc.spec.type === 'LoadBalancer';
    const info = this.allocated.get(key) ?? {
      clusterIP: `10.96.100.${this.allocated.size + 1}`,
      nodePorts: withNodePorts
        ? Object.fromEntries(svc.spec.ports.map((p) => [p.name, this.nextNodePort++]))
        : {},
    };
    this.allocated.set(key, info);
    const from = this.op.logs.length;
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
    const pods = podsMatching(svc.spec.selector);
    this.api.apply({
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
    });
    await this.settle(from);
    return info;
  }

  async setLoadBalancerIngress(namespace: string, name: string, ip: string): Promise<void> {
    const svc = this.api.get('Service', namespace, name)!;
    const from = this.op.logs.length;
    this.api.apply({ ...svc, kind: 'Service', status: { loadBalancer: { ingress: [{ ip }] } } });
    await this.t.external.run('ip', 'route', 'replace', `${ip}/32`, 'via', this.nodeIP);
    await this.settle(from);
  }

  async applyPolicy(policy: PolicyManifest): Promise<void> {
    const from = this.op.logs.length;
    this.api.apply({ ...policy, metadata: { ...policy.metadata } });
    await this.settle(from);
  }

  async policyStatus(namespace: string, name: string): Promise<PolicyStatus | undefined> {
    return this.api.get('ProxyPolicy', namespace, name)?.status as PolicyStatus | undefined;
  }

  request(from: From, to: Target, count: number, timeoutMs = 2000) {
    return probe(from === 'client' ? this.t.client.ns : this.t.external, to, count, timeoutMs);
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
