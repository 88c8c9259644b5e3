/**
 * What an end-to-end scenario needs from a cluster, and the objects both clusters share.
 *
 * Two implementations run the same scenarios (e2e/scenarios.ts): a kind cluster with
 * nftproxy deployed from config/ (e2e/kind), and a node in network namespaces with nftproxy
 * running against the test API stand-in (e2e/netns). Both have the same pods:
 *
 *   node:       pod-a, pod-b (label app=echo) and the client pod
 *   other node: pod-c (labels app=echo, tier=remote)
 *
 * Every echo pod answers TCP 8080 and UDP 5353 with `POD-NAME SOURCE-ADDRESS`
 * (test/support/echo-server.ts); requests are made by test/support/probe.ts.
 */
import type { ProbeResult } from '../test/support/netns.js';
import { eventually as retry } from '../test/support/eventually.js';

/** Where a request starts: the client pod, or a host outside the cluster. */
export type From = 'client' | 'external';

export interface Target {
  host: string;
  port: number;
  protocol?: 'tcp' | 'udp';
}

/** A Service as the scenarios write it (the cluster fills in the addresses). */
export interface ServiceManifest {
  apiVersion: 'v1';
  kind: 'Service';
  metadata: { name: string; namespace: string };
  spec: {
    type?: 'ClusterIP' | 'NodePort' | 'LoadBalancer';
    selector: Record<string, string>;
    ports: { name: string; port: number; targetPort: number; protocol: 'TCP' | 'UDP' }[];
    sessionAffinity?: 'ClientIP';
    externalTrafficPolicy?: 'Local';
  };
}

export interface PolicyManifest {
  apiVersion: 'nftproxy.dev/v1alpha1';
  kind: 'ProxyPolicy';
  metadata: { name: string; namespace: string };
  spec: Record<string, unknown>;
}

/** What the cluster gave a Service: its ClusterIP and NodePorts by port name. */
export interface ServiceInfo {
  clusterIP: string;
  nodePorts: Record<string, number>;
}

export interface PolicyCondition {
  type: string;
  status: string;
  reason: string;
  message: string;
}

export interface PolicyStatus {
  servicesSelected?: number;
  conditions?: PolicyCondition[];
  nodes?: Record<string, { programmed: boolean; message?: string }>;
}

export interface E2ECluster {
  /** The node of pod-a, pod-b and the client. */
  readonly node: string;
  /** The node of pod-c. */
  readonly otherNode: string;
  /** Address of `node` as outside hosts reach it. */
  readonly nodeIP: string;
  readonly clientIP: string;
  readonly externalIP: string;
  /** Creates or replaces a Service; resolves once its endpoints exist and nftproxy had time to sync. */
  applyService(svc: ServiceManifest): Promise<ServiceInfo>;
  /** Sets `status.loadBalancer.ingress` (as a cloud controller would) and routes the outside host's traffic for it to `node`. */
  setLoadBalancerIngress(namespace: string, name: string, ip: string): Promise<void>;
  applyPolicy(policy: PolicyManifest): Promise<void>;
  policyStatus(namespace: string, name: string): Promise<PolicyStatus | undefined>;
  /** `count` new connections (or UDP flows), one after another. */
  request(from: From, to: Target, count: number, timeoutMs?: number): Promise<ProbeResult[]>;
}

/** The namespace of every scenario object. */
export const NAMESPACE = 'e2e';

/** Pods per label, as both clusters run them. */
export const PODS = [
  { name: 'pod-a', labels: { app: 'echo' }, onOtherNode: false },
  { name: 'pod-b', labels: { app: 'echo' }, onOtherNode: false },
  { name: 'pod-c', labels: { app: 'echo', tier: 'remote' }, onOtherNode: true },
] as const;

/** Pods a selector matches. */
export function podsMatching(selector: Record<string, string>): string[] {
  return PODS.filter((p) =>
    Object.entries(selector).every(([k, v]) => (p.labels as Record<string, string>)[k] === v),
  ).map((p) => p.name);
}

/** test/support's eventually, with the kind cluster's longer waits (30 s, every 250 ms). */
export function eventually<T>(check: () => Promise<T>, timeoutMs = 30_000, everyMs = 250): Promise<T> {
  return retry(check, timeoutMs, everyMs);
}
