/**
 * Which conntrack flows a change makes stale.
 */
import assert from 'node:assert/strict';
import { changesBetween, changesOfDelta, staleFlows } from '../../src/controller/conntrack.js';
import { RulesetBuilder } from '../../src/proxy/builder.js';
import { compile } from '../../src/proxy/compile.js';
import { parseProxyConfig } from '../../src/proxy/config.js';
import { compileService } from '../../src/proxy/service.js';
import { emptyRuleset } from '../../src/nft/ruleset.js';
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
  return staleFlows(changesOfDelta(b.takeDelta()), b.ruleset);
}

describe('stale conntrack flows', () => {
  it('names the flows to a removed UDP endpoint, on the service address and the NodePort', () => {
    const flows = flowsOf(['10.244.1.1', '10.244.1.2'], ['10.244.1.1']);
    assert.deepEqual(
      flows.sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b))),
      [
        { family: 'ipv4', protocol: 'udp', origDst: '10.96.0.53', origDstPort: 53, replySrc: '10.244.1.2' },
        { family: 'ipv4', protocol: 'udp', origDstPort: 30053, replySrc: '10.244.1.2' },
      ],
    );
  });

  it('leaves endpoints that only moved to another slot alone', () => {
    // removing .1 shifts .2 from slot 1 to slot 0: only .1 is stale
    const flows = flowsOf(['10.244.1.1', '10.244.1.2'], ['10.244.1.2']);
    assert.deepEqual(new Set(flows.map((f) => f.replySrc)), new Set(['10.244.1.1']));
  });

  it('ignores TCP, where a dead endpoint ends the connection anyway', () => {
    assert.deepEqual(flowsOf(['10.244.1.1', '10.244.1.2'], ['10.244.1.1'], 'TCP'), []);
  });

  it('clears untranslated flows to a UDP service that just got its first endpoint', () => {
    const flows = flowsOf([], ['10.244.1.1']);
    assert.deepEqual(
      new Set(flows.map((f) => `${f.origDst ?? '*'}:${f.origDstPort} from ${f.replySrc ?? 'any'}`)),
      new Set(['10.96.0.53:53 from any', '*:30053 from any']),
    );
  });

  it('finds nothing stale when the kernel had no table before (first start), never flushing wholesale', () => {
    const after = compile(dns(['10.244.1.1']), CONFIG).ruleset;
    assert.deepEqual(staleFlows(changesBetween(emptyRuleset(), after), after), []);
  });

  it('finds the same flows from kernel-versus-desired in a full sync', () => {
    const before = compile(dns(['10.244.1.1', '10.244.1.2']), CONFIG).ruleset;
    const after = compile(dns(['10.244.1.1']), CONFIG).ruleset;
    assert.deepEqual(
      new Set(staleFlows(changesBetween(before, after), after).map((f) => f.replySrc)),
      new Set(['10.244.1.2']),
    );
  });
});
