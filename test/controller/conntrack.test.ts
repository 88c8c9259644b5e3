/**
 * Which conntrack flows a change makes stale.
 */
import assert from 'node:assert/strict';
import {
  type Flow,
  portChangesOfDelta,
  staleFlows,
  staleFlowsInTable,
} from '../../src/controller/conntrack.js';
import { RulesetBuilder } from '../../src/proxy/builder.js';
import { compile } from '../../src/proxy/compile.js';
import { parseProxyConfig } from '../../src/proxy/config.js';
import { compileService } from '../../src/proxy/service.js';
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

/** A UDP flow as conntrack lists it: client to `dst:dport`, answered by `replySrc:replyPort`. */
function flow(dst: string, dport: number, replySrc: string, replyPort: number, protocol = 'udp'): Flow {
  return {
    family: 'ipv4',
    protocol,
    timeout: 30,
    original: { src: '10.244.9.9', dst, sport: 40000, dport },
    reply: { src: replySrc, dst: '10.244.9.9', sport: replyPort, dport: 40000 },
    flags: [],
  };
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

  it('in a full sync, finds in conntrack the flows that no longer fit what is programmed', () => {
    const entries = compile(dns(['10.244.1.1']), CONFIG).builder.units();
    const flows = [
      flow('10.96.0.53', 53, '10.96.0.53', 40000), // sent before the rule existed: untranslated
      flow('10.96.0.53', 53, '10.244.1.1', 5353), // to the endpoint: fine
      flow('10.96.0.53', 53, '10.244.1.2', 5353), // to an endpoint that went
      flow('10.96.0.53', 53, '10.244.1.1', 5354), // to the right pod, a port it no longer serves
      flow('192.168.50.1', 30053, '192.168.50.1', 40000), // the NodePort, untranslated
      flow('192.168.50.1', 30053, '10.244.1.1', 5353), // the NodePort, to the endpoint
      flow('10.96.0.99', 53, '10.96.0.99', 40000), // not an address of ours: left alone
      flow('10.96.0.53', 53, '10.244.1.2', 5353, 'tcp'), // TCP: left alone
    ];
    assert.deepEqual(
      new Set(staleFlowsInTable(flows, entries).map((f) => JSON.stringify(f))),
      new Set(
        [
          { family: 'ipv4', protocol: 'udp', origDst: '10.96.0.53', origDstPort: 53, replySrc: '10.96.0.53' },
          {
            family: 'ipv4',
            protocol: 'udp',
            origDst: '10.96.0.53',
            origDstPort: 53,
            replySrc: '10.244.1.2',
            replyPortSrc: 5353,
          },
          {
            family: 'ipv4',
            protocol: 'udp',
            origDst: '10.96.0.53',
            origDstPort: 53,
            replySrc: '10.244.1.1',
            replyPortSrc: 5354,
          },
          { family: 'ipv4', protocol: 'udp', origDstPort: 30053, replyPortSrc: 30053 },
        ].map((f) => JSON.stringify(f)),
      ),
    );
    assert.ok(
      staleFlowsInTable(flows, entries)
        .filter((f) => f.replySrc === f.origDst || f.replyPortSrc === f.origDstPort)
        .every(untranslatedOnly),
    );
  });

  it('in a full sync with no endpoints left, keeps no translated flow and clears no untranslated one', () => {
    const entries = compile(dns([]), CONFIG).builder.units();
    const stale = staleFlowsInTable(
      [flow('10.96.0.53', 53, '10.244.1.1', 5353), flow('10.96.0.53', 53, '10.96.0.53', 40000)],
      entries,
    );
    // Rejected now: the untranslated flow stays (nothing would translate it); the translated one goes.
    assert.deepEqual(
      stale.map((f) => f.replySrc),
      ['10.244.1.1'],
    );
  });
});
