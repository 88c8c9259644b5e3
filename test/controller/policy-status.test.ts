/**
 * ProxyPolicy status: the pure computation, then the writer with the real client library
 * (@kubernetes/client-node) against the stand-in API server, several nodes at once.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import {
  computeStatus,
  mergePatchBetween,
  type PolicyCondition,
  type PolicyResult,
  type ProxyPolicyStatus,
  removeNodeStatus,
} from '../../src/controller/policy-status.js';
import { PolicyStatusWriter } from '../../src/controller/policy-status-writer.js';
import type { Logger } from '../../src/telemetry/log.js';
import { FakeApiServer } from '../support/apiserver.js';
import { type CRD, CRDModel } from '../support/crd-validator.js';

const T0 = new Date('2025-01-01T00:00:00.123Z');
const T1 = new Date('2025-01-01T00:05:00Z');

const result = (over: Partial<PolicyResult> = {}): PolicyResult => ({
  namespace: 'default',
  name: 'p1',
  generation: 1,
  problems: [],
  servicesSelected: ['default/web', 'default/db'],
  conflicts: new Map(),
  programmed: true,
  message: 'programmed',
  ...over,
});

const invalid = {
  problems: [{ field: 'spec.scheduler.weights[0].weight', message: 'must be 0 to 100, got 101' }],
  servicesSelected: [],
};

/** An object as read from the API server. */
const object = (generation: number, status?: ProxyPolicyStatus) => ({
  apiVersion: 'nftproxy.dev/v1alpha1',
  kind: 'ProxyPolicy',
  metadata: { name: 'p1', namespace: 'default', generation, resourceVersion: '7' },
  ...(status ? { status } : {}),
});

const condition = (s: ProxyPolicyStatus, type: string): PolicyCondition => {
  const c = s.conditions?.find((x) => x.type === type);
  assert.ok(c, `condition ${type} present`);
  return c;
};

/** type/status/reason: the part of a condition that tests mostly care about. */
const brief = (s: ProxyPolicyStatus, type: string) => {
  const c = condition(s, type);
  return `${c.status}/${c.reason}`;
};

describe('ProxyPolicy status computation', () => {
  it('accepts a valid policy, counts its services, and records this node', () => {
    const { status, changed } = computeStatus(object(1), result(), 'node-a', T0);
    assert.equal(changed, true);
    assert.equal(status.observedGeneration, 1);
    assert.equal(status.servicesSelected, 2);
    assert.deepEqual(condition(status, 'Accepted'), {
      type: 'Accepted',
      status: 'True',
      observedGeneration: 1,
      lastTransitionTime: '2025-01-01T00:00:00Z',
      reason: 'Accepted',
      message: 'selects 2 services',
    });
    assert.deepEqual(condition(status, 'Programmed'), {
      type: 'Programmed',
      status: 'True',
      observedGeneration: 1,
      lastTransitionTime: '2025-01-01T00:00:00Z',
      reason: 'Programmed',
      message: 'programmed on 1 of 1 node',
    });
    assert.deepEqual(status.nodes, {
      'node-a': {
        observedGeneration: 1,
        programmed: true,
        message: 'programmed',
        lastUpdateTime: '2025-01-01T00:00:00Z',
      },
    });
  });

  it('rejects an invalid policy with the fields in the message, and does not call it programmed', () => {
    const { status } = computeStatus(object(1), result({ ...invalid, programmed: false }), 'node-a', T0);
    assert.equal(brief(status, 'Accepted'), 'False/Invalid');
    assert.equal(
      condition(status, 'Accepted').message,
      'spec.scheduler.weights[0].weight: must be 0 to 100, got 101',
    );
    assert.equal(brief(status, 'Programmed'), 'False/Invalid');
    assert.equal(status.servicesSelected, 0);
  });

  it('names the services another policy governs, and which policy', () => {
    const r = result({ conflicts: new Map([['default/web', 'default/older']]) });
    const { status } = computeStatus(object(1), r, 'node-a', T0);
    assert.equal(brief(status, 'Accepted'), 'True/Conflicted');
    assert.equal(status.servicesSelected, 1, 'selected and won');
    assert.equal(
      condition(status, 'Accepted').message,
      '1 of 2 selected services governed by another policy: default/web (by default/older)',
    );
    assert.equal(brief(status, 'Programmed'), 'True/Programmed');
  });

  it('says when a valid policy selects nothing', () => {
    const { status } = computeStatus(object(1), result({ servicesSelected: [] }), 'node-a', T0);
    assert.equal(brief(status, 'Accepted'), 'True/NoServices');
    assert.equal(status.servicesSelected, 0);
  });

  it('aggregates Programmed over the nodes that synced the current generation only', () => {
    const current = object(3, {
      nodes: {
        'node-b': {
          observedGeneration: 3,
          programmed: false,
          message: 'nft: No such file',
          lastUpdateTime: 'x',
        },
        'node-c': {
          observedGeneration: 2,
          programmed: false,
          message: 'stale failure',
          lastUpdateTime: 'x',
        },
        'node-d': { observedGeneration: 3, programmed: true, message: 'programmed', lastUpdateTime: 'x' },
      },
    });
    const { status } = computeStatus(current, result({ generation: 3 }), 'node-a', T0);
    assert.equal(brief(status, 'Programmed'), 'False/ProgrammingFailed');
    assert.equal(
      condition(status, 'Programmed').message,
      'failed on 1 of 3 nodes: node-b: nft: No such file',
    );
    assert.equal(condition(status, 'Programmed').observedGeneration, 3);
    assert.deepEqual(Object.keys(status.nodes!).sort(), ['node-a', 'node-b', 'node-c', 'node-d']);
  });

  it('leaves the node-independent parts alone when this node synced an older generation', () => {
    const accepted = computeStatus(object(2), result({ generation: 2 }), 'node-a', T0).status;
    const { status } = computeStatus(object(3, accepted), result({ generation: 2 }), 'node-b', T1);
    assert.equal(status.observedGeneration, 2, 'still what generation 2 said');
    assert.equal(condition(status, 'Accepted').observedGeneration, 2);
    assert.equal(status.nodes!['node-b']!.observedGeneration, 2);
    assert.equal(brief(status, 'Programmed'), 'Unknown/Pending');
    assert.equal(condition(status, 'Programmed').message, 'no node has reported generation 3 yet');
  });

  it('reports no change, and keeps lastTransitionTime, when only time has passed', () => {
    const first = computeStatus(object(1), result(), 'node-a', T0).status;
    const again = computeStatus(object(1, first), result(), 'node-a', T1);
    assert.equal(again.changed, false);
    assert.deepEqual(again.status, first);
    assert.equal(mergePatchBetween(first, again.status), undefined, 'nothing to patch');
  });

  it('moves lastTransitionTime only for conditions whose status changed', () => {
    const T2 = new Date('2025-01-01T00:10:00Z');
    const first = computeStatus(object(1), result(), 'node-a', T0).status;
    const failed = computeStatus(
      object(1, first),
      result({ programmed: false, message: 'nft: boom' }),
      'node-a',
      T1,
    );
    assert.equal(failed.changed, true);
    assert.equal(condition(failed.status, 'Accepted').lastTransitionTime, '2025-01-01T00:00:00Z');
    assert.equal(condition(failed.status, 'Programmed').lastTransitionTime, '2025-01-01T00:05:00Z');
    assert.equal(failed.status.nodes!['node-a']!.lastUpdateTime, '2025-01-01T00:05:00Z');
    // A new message is a change, but not a transition; the node entry was updated.
    const reworded = computeStatus(
      object(1, failed.status),
      result({ programmed: false, message: 'nft: bang' }),
      'node-a',
      T2,
    );
    assert.equal(reworded.changed, true);
    assert.equal(condition(reworded.status, 'Programmed').lastTransitionTime, '2025-01-01T00:05:00Z');
    assert.match(condition(reworded.status, 'Programmed').message, /nft: bang/);
    assert.equal(reworded.status.nodes!['node-a']!.lastUpdateTime, '2025-01-01T00:10:00Z');
  });

  it('removes a node entry and recomputes the aggregate', () => {
    const a = computeStatus(
      object(1),
      result({ programmed: false, message: 'nft: boom' }),
      'node-a',
      T0,
    ).status;
    const ab = computeStatus(object(1, a), result(), 'node-b', T0).status;
    assert.equal(brief(ab, 'Programmed'), 'False/ProgrammingFailed');
    const { status, changed } = removeNodeStatus(object(1, ab), 'node-a', T1);
    assert.equal(changed, true);
    assert.deepEqual(Object.keys(status.nodes!), ['node-b']);
    assert.equal(condition(status, 'Programmed').message, 'programmed on 1 of 1 node');
    assert.equal(removeNodeStatus(object(1, status), 'node-a', T1).changed, false);
  });

  it('diffs as an RFC 7386 merge patch: nested keys, null for removed ones, lists whole', () => {
    assert.deepEqual(
      mergePatchBetween(
        { nodes: { a: { m: 'x', n: 1 }, b: { m: 'y' } }, conditions: [{ t: 1 }, { t: 2 }] },
        { nodes: { a: { m: 'z', n: 1 } }, conditions: [{ t: 1 }, { t: 3 }] },
      ),
      { nodes: { a: { m: 'z' }, b: null }, conditions: [{ t: 1 }, { t: 3 }] },
    );
  });
});

describe('ProxyPolicy status writer (client-node against a stand-in API server)', function () {
  this.timeout(30_000);
  let api: FakeApiServer;
  const instant = () => Promise.resolve();

  beforeEach(async () => {
    api = new FakeApiServer();
    await api.start();
  });

  afterEach(async () => {
    await api.stop();
  });

  const policy = (name: string) => ({
    apiVersion: 'nftproxy.dev/v1alpha1',
    kind: 'ProxyPolicy',
    metadata: { name, namespace: 'default' },
    spec: { selector: { serviceNames: ['web', 'db'] }, scheduler: { type: 'random' } },
  });
  const writer = (nodeName: string, log?: Logger) =>
    new PolicyStatusWriter({
      kubeConfig: api.kubeConfig(),
      nodeName,
      sleep: instant,
      ...(log ? { log } : {}),
    });
  const statusOf = (name = 'p1') => api.get('ProxyPolicy', 'default', name)!.status as ProxyPolicyStatus;
  const uid = (name = 'p1') => api.get('ProxyPolicy', 'default', name)!.metadata.uid!;
  const patches = () => api.requests.filter((r) => r === 'patch ProxyPolicy/status').length;

  it('writes Accepted and this node’s entry for a valid policy, as a merge patch', async () => {
    api.apply(policy('p1'));
    const n = await writer('node-a').report([result({ uid: uid() })]);
    assert.equal(n, 1);
    const s = statusOf();
    assert.equal(brief(s, 'Accepted'), 'True/Accepted');
    assert.equal(brief(s, 'Programmed'), 'True/Programmed');
    assert.equal(s.nodes!['node-a']!.programmed, true);
    assert.equal(s.observedGeneration, 1);
    assert.deepEqual(api.get('ProxyPolicy', 'default', 'p1')!.spec, policy('p1').spec, 'spec untouched');
  });

  it('marks an invalid policy and posts exactly one Warning Event, however often it is reported', async () => {
    api.apply(policy('p1'));
    const a = writer('node-a');
    const b = writer('node-b');
    for (let i = 0; i < 4; i++) {
      // The node messages change every round, so status is patched every round.
      const r = (node: string) =>
        result({ uid: uid(), ...invalid, programmed: false, message: `${node} round ${i}` });
      await a.report([r('a')]);
      await b.report([r('b')]);
    }
    assert.ok(patches() >= 8, 'status was written every round');
    const s = statusOf();
    assert.equal(brief(s, 'Accepted'), 'False/Invalid');
    assert.match(condition(s, 'Accepted').message, /spec\.scheduler\.weights\[0\]\.weight: must be/);
    assert.equal(api.events.length, 1, 'one Event for the cluster');
    const e = api.events[0]!;
    assert.equal(e.type, 'Warning');
    assert.equal(e.reason, 'Invalid');
    assert.match(String(e.message), /spec\.scheduler\.weights\[0\]\.weight/);
    const { resourceVersion, ...ref } = e.involvedObject as Record<string, unknown>;
    assert.deepEqual(ref, {
      apiVersion: 'nftproxy.dev/v1alpha1',
      kind: 'ProxyPolicy',
      namespace: 'default',
      name: 'p1',
      uid: uid(),
    });
    assert.match(String(resourceVersion), /^\d+$/);
    assert.deepEqual(e.source, { component: 'nftproxy', host: 'node-a' });
    assert.equal(e.reportingComponent, 'nftproxy');

    // Fixed, then broken differently: one more Event.
    api.apply({ ...policy('p1'), spec: { ...policy('p1').spec, masquerade: 'always' } });
    await a.report([result({ uid: uid(), generation: 2 })]);
    const other = [{ field: 'spec.sourceRanges.allow[0]', message: 'not a CIDR: "x"' }];
    api.apply({ ...policy('p1'), spec: { ...policy('p1').spec, masquerade: 'never' } });
    await a.report([result({ uid: uid(), generation: 3, problems: other, servicesSelected: [] })]);
    await b.report([result({ uid: uid(), generation: 3, problems: other, servicesSelected: [] })]);
    assert.equal(api.events.length, 2);
    assert.match(String(api.events[1]!.message), /spec\.sourceRanges\.allow\[0\]: not a CIDR/);
  });

  it('does not repeat an Event when it rewrites a status someone cleared', async () => {
    api.apply(policy('p1'));
    const a = new PolicyStatusWriter({
      kubeConfig: api.kubeConfig(),
      nodeName: 'node-a',
      sleep: instant,
      recheckMs: 0,
    });
    const r = result({ uid: uid(), ...invalid, programmed: false });
    await a.report([r]);
    api.apply({ ...policy('p1'), status: {} });
    assert.equal(await a.report([r]), 1, 'read again (recheckMs 0) and rewritten');
    assert.equal(brief(statusOf(), 'Accepted'), 'False/Invalid');
    assert.equal(api.events.length, 1);
  });

  it('lets two nodes write at once: a conflict is re-read and retried, and both entries count', async () => {
    api.apply(policy('p1'));
    api.getDelayMs = 30; // both read the same resourceVersion before either writes
    const a = writer('node-a');
    const b = writer('node-b');
    for (let i = 0; i < 10; i++) {
      const r = (node: string) => result({ uid: uid(), message: `${node} round ${i}` });
      const [pa, pb] = await Promise.all([a.report([r('node-a')]), b.report([r('node-b')])]);
      assert.deepEqual([pa, pb], [1, 1], `round ${i}: both wrote`);
    }
    assert.ok(api.conflicts >= 1, `the race happened (${api.conflicts} conflicts)`);
    const s = statusOf();
    assert.deepEqual(Object.fromEntries(Object.entries(s.nodes!).map(([n, e]) => [n, e.message])), {
      'node-a': 'node-a round 9',
      'node-b': 'node-b round 9',
    });
    assert.equal(condition(s, 'Programmed').message, 'programmed on 2 of 2 nodes');
  });

  it('sends no patch when nothing changed, not even from a writer that starts afresh', async () => {
    api.apply(policy('p1'));
    const r = result({ uid: uid() });
    assert.equal(await writer('node-a').report([r]), 1);
    const rv = api.get('ProxyPolicy', 'default', 'p1')!.metadata.resourceVersion;
    const w = writer('node-a');
    assert.equal(await w.report([r]), 0);
    assert.equal(await w.report([r]), 0);
    assert.equal(patches(), 1);
    assert.equal(api.get('ProxyPolicy', 'default', 'p1')!.metadata.resourceVersion, rv);
  });

  it('removes its entry from policies it no longer reports, and shrugs at deleted ones', async () => {
    api.apply(policy('p1'));
    api.apply(policy('p2'));
    const a = writer('node-a');
    const b = writer('node-b');
    await b.report([result({ uid: uid('p1') })]);
    await a.report([result({ uid: uid('p1') }), result({ name: 'p2', uid: uid('p2') })]);
    assert.equal(condition(statusOf('p1'), 'Programmed').message, 'programmed on 2 of 2 nodes');
    api.delete('ProxyPolicy', 'default', 'p2');
    assert.equal(await a.report([]), 1, 'p1 patched, p2 gone');
    assert.deepEqual(Object.keys(statusOf('p1').nodes!), ['node-b']);
    assert.equal(condition(statusOf('p1'), 'Programmed').message, 'programmed on 1 of 1 node');
    assert.equal(await a.report([]), 0, 'forgotten: nothing more to remove');
  });

  it('writes only status the CRD schema admits', async () => {
    const crd = new CRDModel(parse(readFileSync('crds/proxypolicies.nftproxy.dev.yaml', 'utf8')) as CRD);
    const check = (what: string) => assert.deepEqual(crd.validateField('status', statusOf()), [], what);
    api.apply(policy('p1'));
    const [a, b] = [writer('node-a'), writer('node-b')];
    await a.report([result({ uid: uid() })]);
    check('valid');
    await b.report([result({ uid: uid(), programmed: false, message: `nft: ${'x'.repeat(2000)}` })]);
    check('failed on a node, with a long message');
    await a.report([result({ uid: uid(), conflicts: new Map([['default/web', 'default/older']]) })]);
    check('conflicted');
    await a.report([result({ uid: uid(), ...invalid, programmed: false, message: 'invalid' })]);
    check('invalid');
    api.apply({ ...policy('p1'), spec: { ...policy('p1').spec, masquerade: 'always' } });
    await b.report([result({ uid: uid() })]);
    check('pending');
    await a.report([]);
    check('a node gone');
  });

  it('never throws out of report(): failures are logged with the policy', async () => {
    api.apply(policy('p1'));
    const warnings: Record<string, unknown>[] = [];
    const log: Logger = { debug() {}, info() {}, error() {}, warn: (msg, f) => warnings.push({ msg, ...f }) };
    await api.down();
    const n = await writer('node-a', log).report([result(), result({ name: 'p2' })]);
    assert.equal(n, 0);
    assert.deepEqual(warnings.map((w) => w.policy).sort(), ['default/p1', 'default/p2']);
  });
});
