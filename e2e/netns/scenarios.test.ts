/**
 * @kernel The e2e scenarios on a node in network namespaces: the same scenarios as the kind
 * suite (e2e/kind), here on every machine where the tests run as root. They run against a
 * real kube-apiserver (scripts/kube-build) with nftproxy as config/'s ServiceAccount; where
 * that cannot run, against the API stand-in (under CI a missing real server fails instead).
 */
import assert from 'node:assert/strict';
import { realApiServerMissing } from '../../test/support/kube-apiserver.js';
import { requireKernel, tally } from '../../test/support/netns.js';
import { eventually, NAMESPACE, type ServiceManifest } from '../cluster.js';
import { scenarios } from '../scenarios.js';
import { NetnsCluster } from './cluster.js';

const missing = realApiServerMissing();
if (missing && process.env.CI)
  throw new Error(`the e2e suite needs the real API server under CI: ${missing}`);
const kind = missing ? 'stand-in' : 'real';

describe(`@kernel e2e: scenarios on a node in network namespaces (${kind === 'real' ? 'real kube-apiserver' : 'API stand-in'})`, function () {
  this.timeout(120_000);
  let cluster: NetnsCluster | undefined;

  before(async function () {
    requireKernel(this);
    cluster = await NetnsCluster.create(kind);
  });

  after(async () => {
    await cluster?.destroy();
  });

  scenarios(() => cluster!);

  describe('on the real API server', () => {
    before(function () {
      if (!cluster?.realApiServer) this.skip();
    });

    const web: ServiceManifest = {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'patched', namespace: NAMESPACE },
      spec: {
        selector: { app: 'echo' },
        ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }],
      },
    };
    const kubectl = (...args: string[]) => cluster!.realApiServer!.kubectl(...args);

    it('an EndpointSlice rewritten through the API reaches traffic', async () => {
      const c = cluster!;
      const svc = await c.applyService(web);
      await eventually(async () => {
        const r = await c.request('client', { host: svc.clusterIP, port: 80 }, 30);
        assert.deepEqual(Object.keys(tally(r)).sort(), ['pod-a', 'pod-b', 'pod-c'], JSON.stringify(tally(r)));
      });
      await c.setEndpoints(web, ['pod-a', 'pod-c']);
      const r = await c.request('client', { host: svc.clusterIP, port: 80 }, 30);
      assert.deepEqual(Object.keys(tally(r)).sort(), ['pod-a', 'pod-c'], JSON.stringify(tally(r)));
    });

    it('an operator restart under traffic fails no connection', async () => {
      const c = cluster!;
      const svc = await c.applyService({ ...web, metadata: { ...web.metadata, name: 'restart' } });
      const traffic = c.requestFor({ host: svc.clusterIP, port: 80 }, 6000);
      await new Promise((r) => setTimeout(r, 1000));
      await c.restartOperator();
      const results = await traffic;
      assert.ok(results.length > 50, `${results.length} connections`);
      assert.deepEqual(
        results.filter((x) => !x.ok),
        [],
        JSON.stringify(tally(results)),
      );
    });

    it('a ProxyPolicy that 1.20 admits but nftproxy refuses gets Accepted False with the reason', async () => {
      // Both serviceNames and serviceSelector: the CRD's CEL rule refuses it on servers that
      // run CEL; 1.20 drops CEL, so nftproxy's own validation must answer.
      const c = cluster!;
      await c.writePolicy({
        apiVersion: 'nftproxy.dev/v1alpha1',
        kind: 'ProxyPolicy',
        metadata: { name: 'both-selectors', namespace: NAMESPACE },
        spec: {
          selector: { serviceNames: ['patched'], serviceSelector: { matchLabels: { app: 'x' } } },
          scheduler: { type: 'roundRobin' },
        },
      });
      const cond = await eventually(async () => {
        const s = await c.policyStatus(NAMESPACE, 'both-selectors');
        const accepted = s?.conditions?.find((x) => x.type === 'Accepted');
        assert.equal(accepted?.status, 'False', JSON.stringify(s));
        return accepted!;
      });
      assert.match(cond.message, /serviceNames|serviceSelector/, cond.message);
      // The Event nftproxy wrote as config/'s ServiceAccount (RBAC: events create).
      const events = await kubectl('get', 'events', '-n', NAMESPACE, '-o', 'json');
      const items = (
        JSON.parse(events.stdout) as { items: { involvedObject: { name: string }; type: string }[] }
      ).items;
      assert.ok(
        items.some((e) => e.involvedObject.name === 'both-selectors' && e.type === 'Warning'),
        events.stdout.slice(0, 2000),
      );
    });

    it('kubectl get proxypolicies shows the printer columns with nftproxy status', async () => {
      const { stdout } = await kubectl('get', 'proxypolicies', '-n', NAMESPACE);
      const [head, ...rows] = stdout.trim().split('\n');
      assert.match(head!, /^NAME\s+SCHEDULER\s+SERVICES\s+PROGRAMMED\s+AGE$/, stdout);
      const rr = rows.find((l) => l.startsWith('rr '));
      assert.match(rr ?? '', /^rr\s+roundRobin\s+1\s+True\s+\S+$/, stdout);
    });
  });

  it('logged no error while running them', () => {
    assert.deepEqual(cluster!.errors(), []);
  });
});
