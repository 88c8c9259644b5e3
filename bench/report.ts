/**
 * What the operator's report after a sync costs (policy statuses and health check node
 * ports), for a cluster of N services without ProxyPolicies and with a tenth of them
 * externalTrafficPolicy Local: after a partial sync of one service, against recomputing from
 * every service (what each report did before the health checks were kept per service and
 * policy results looked only at namespaces with policies). Medians of R runs.
 *
 *   npm run build:bench && node dist-bench/bench/report.js [services] [repetitions]
 */
import { performance } from 'node:perf_hooks';
import { HealthChecks, policyResults } from '../src/controller/reports.js';
import { ClusterStore } from '../src/k8s/store.js';
import { syntheticCluster } from '../test/support/synthetic.js';

const services = Number(process.argv[2] ?? 50_000);
const reps = Number(process.argv[3] ?? 21);
const store = new ClusterStore('n');
const cluster = syntheticCluster(services);
for (const [i, svc] of cluster.services.entries()) {
  if (i % 10 === 0)
    Object.assign(svc, { externalTrafficPolicy: 'Local', healthCheckNodePort: 30000 + (i % 2000) });
  store.upsert({ kind: 'Service', object: svc });
}
for (const slice of cluster.endpointSlices) store.upsert({ kind: 'EndpointSlice', object: slice });

const median = (f: () => void): number => {
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const start = performance.now();
    f();
    times.push(performance.now() - start);
  }
  return times.sort((a, b) => a - b)[reps >> 1]!;
};

const checks = new HealthChecks('n');
checks.update(store);
const one = [cluster.services[0]!].map((s) => `${s.metadata.namespace}/${s.metadata.name}`);
const before = median(() => {
  // Every service walked: the old policyResults grouping and the old health checks.
  const byNamespace = new Map<string, unknown[]>();
  for (const key of store.serviceKeys()) {
    const svc = store.service(key)!;
    const list = byNamespace.get(svc.metadata.namespace) ?? [];
    list.push(svc);
    byNamespace.set(svc.metadata.namespace, list);
  }
  new HealthChecks('n').update(store);
});
const after = median(() => {
  policyResults(store, { ok: true });
  checks.update(store, one);
  void new Map(checks.current);
});
console.log(
  `report after a one-service sync, ${services} services, ${checks.current.size} health checks, no policies: ` +
    `every service ${before.toFixed(2)} ms, incremental ${after.toFixed(3)} ms (${(before / after).toFixed(0)}x)`,
);
