/**
 * Which conntrack flows a change makes stale.
 */
import assert from 'node:assert/strict';
import {
  KernelPorts,
  PORT_SETS,
  portChangesOfDelta,
  portChangesOfFull,
  staleFlows,
} from '../../src/controller/conntrack.js';
import { RulesetBuilder } from '../../src/proxy/builder.js';
import { compile } from '../../src/proxy/compile.js';
import { parseProxyConfig } from '../../src/proxy/config.js';
import { compileService } from '../../src/proxy/service.js';
import { elemLine } from '../../src/nft/lines.js';
import type { Ruleset } from '../../src/nft/ruleset.js';
import { cluster, service, slice } from '../support/cluster.js';

const CONFIG = parseProxyConfig({ nodeName: 'n1', clusterCIDRs: ['10.244.0.0/16'] });
const dns = (eps: string[], protocol: 'UDP' | 'TCP' = 'UDP') =>
  cluster(
    service('dns', {
      type: 'NodePort',
      clusterIP: '10.96.0.53',
      ports: [{ port: 53, protocol, nodePort: 30053 }],
    }),
    slice('dns', [{ port: 5353, protocol }], eps),
  );

function flowsOf(eps1: string[], eps2: string[], protocol: 'UDP' | 'TCP' = 'UDP') {
  const b = new RulesetBuilder(CONFIG, []);
  const set = (eps: string[]) => {
    const s = dns(eps, protocol);
    b.setService('default/dns', compileService(s.services[0]!, s.endpointSlices));
  };
  set(eps1);
  b.takeDelta();
  set(eps2);
  return staleFlows(portChangesOfDelta(b.takeDelta().entries.values()));
}

/** The kernel's port states as a full sync reads them, from a ruleset standing in for the kernel. */
function kernelPorts(r: Ruleset) {
  const kp = new KernelPorts('ipv4');
  const t = r.tables.get('ip nftproxy')!;
  for (const set of PORT_SETS) kp.add(set, [...t.sets.get(set)!.elems.values()].map(elemLine));
  return kp.states;
}

/** Every filter matches only untranslated flows: replies from the address or port itself. */
const untranslatedOnly = (f: {
  origDst?: string;
  replySrc?: string;
  origDstPort: number;
  replyPortSrc?: number;
}) =>
  (f.origDst !== undefined && f.replySrc === f.origDst) ||
  (f.origDst === undefined && f.replyPortSrc === f.origDstPort);

describe('stale conntrack flows', () => {
  it('names the flows to a removed UDP endpoint, on the service address and the NodePort', () => {
    const flows = flowsOf(['10.244.1.1', '10.244.1.2'], ['10.244.1.1']);
    assert.deepEqual(
      new Set(flows.map((f) => JSON.stringify(f))),
      new Set([
        JSON.stringify({
          family: 'ipv4',
          protocol: 'udp',
          origDst: '10.96.0.53',
          origDstPort: 53,
          replySrc: '10.244.1.2',
          replyPortSrc: 5353,
        }),
        JSON.stringify({
          family: 'ipv4',
          protocol: 'udp',
          origDstPort: 30053,
          replySrc: '10.244.1.2',
          replyPortSrc: 5353,
        }),
      ]),
    );
  });

  it('leaves endpoints that only moved to another slot alone', () => {
    // removing .1 shifts .2 from slot 1 to slot 0: only .1 is stale
    const flows = flowsOf(['10.244.1.1', '10.244.1.2'], ['10.244.1.2']);
    assert.deepEqual(new Set(flows.map((f) => f.replySrc)), new Set(['10.244.1.1']));
  });

  it('names the flows to an endpoint whose port changed', () => {
    const b = new RulesetBuilder(CONFIG, []);
    const set = (port: number) => {
      const s = cluster(
        service('dns', { clusterIP: '10.96.0.53', ports: [{ port: 53, protocol: 'UDP' }] }),
        slice('dns', [{ port, protocol: 'UDP' }], ['10.244.1.1']),
      );
      b.setService('default/dns', compileService(s.services[0]!, s.endpointSlices));
    };
    set(5353);
    b.takeDelta();
    set(5354);
    assert.deepEqual(
      staleFlows(portChangesOfDelta(b.takeDelta().entries.values())).map((f) => [f.replySrc, f.replyPortSrc]),
      [['10.244.1.1', 5353]],
    );
  });

  it('ignores TCP, where a dead endpoint ends the connection anyway', () => {
    assert.deepEqual(flowsOf(['10.244.1.1', '10.244.1.2'], ['10.244.1.1'], 'TCP'), []);
  });

  it('clears only untranslated flows of a UDP service that just got its first endpoint', () => {
    const flows = flowsOf([], ['10.244.1.1']);
    assert.deepEqual(
      new Set(
        flows.map(
          (f) =>
            `${f.origDst ?? '*'}:${f.origDstPort} replies from ${f.replySrc ?? '*'}:${f.replyPortSrc ?? '*'}`,
        ),
      ),
      new Set(['10.96.0.53:53 replies from 10.96.0.53:*', '*:30053 replies from *:30053']),
    );
    assert.ok(flows.every(untranslatedOnly));
  });

  it('on a first start (no table before) clears untranslated flows only, never translated ones', () => {
    const after = compile(dns(['10.244.1.1']), CONFIG);
    const flows = staleFlows(portChangesOfFull(new Map(), after.entries));
    assert.equal(flows.length, 2);
    assert.ok(flows.every(untranslatedOnly), JSON.stringify(flows));
  });

  it('finds the same flows from kernel-versus-desired in a full sync', () => {
    const before = compile(dns(['10.244.1.1', '10.244.1.2']), CONFIG).ruleset;
    const after = compile(dns(['10.244.1.1']), CONFIG);
    assert.deepEqual(
      new Set(staleFlows(portChangesOfFull(kernelPorts(before), after.entries)).map((f) => f.replySrc)),
      new Set(['10.244.1.2']),
    );
    // In step: nothing is stale.
    assert.deepEqual(staleFlows(portChangesOfFull(kernelPorts(after.ruleset), after.entries)), []);
  });
});
