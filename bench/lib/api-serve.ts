/**
 * An API server holding a cluster, in a process of its own so that its memory is not the
 * operator's: the test stand-in (test/support/apiserver.ts) with `apiCluster(services)`
 * loaded. Prints `{"port": N}` once listening. Each line on stdin `change K` replaces one
 * pod of EndpointSlice K (a new address) and answers `ok`; end of stdin stops it.
 *
 *   node dist-bench/bench/lib/api-serve.js SERVICES
 */
import { createInterface } from 'node:readline';
import { apiCluster } from '../../test/support/api-objects.js';
import { FakeApiServer } from '../../test/support/apiserver.js';

const services = Number(process.argv[2] ?? 1000);
const api = new FakeApiServer();
const { services: svcs, endpointSlices } = apiCluster(services);
type Applied = Parameters<FakeApiServer['apply']>[0];
for (const s of svcs) api.apply({ kind: 'Service', ...(s as object) } as Applied);
for (const s of endpointSlices) api.apply({ kind: 'EndpointSlice', ...(s as object) } as Applied);
api.apply({
  kind: 'Node',
  metadata: { name: 'node-0', labels: { 'topology.kubernetes.io/zone': 'zone-a' } },
  status: { addresses: [{ type: 'InternalIP', address: '192.168.50.1' }] },
});
await api.start();
process.stdout.write(JSON.stringify({ port: api.port }) + '\n');

let pod = 0;
for await (const line of createInterface({ input: process.stdin })) {
  const m = /^change (\d+)$/.exec(line.trim());
  if (!m) continue;
  const slice = structuredClone(endpointSlices[Number(m[1]) % endpointSlices.length]) as {
    metadata: { name: string };
    endpoints: { addresses: string[] }[];
  };
  pod++;
  slice.endpoints[slice.endpoints.length - 1]!.addresses = [
    `10.${200 + (pod >> 16)}.${(pod >> 8) & 255}.${pod & 255}`,
  ];
  endpointSlices[Number(m[1]) % endpointSlices.length] = slice;
  api.apply({ kind: 'EndpointSlice', ...slice } as Applied);
  process.stdout.write('ok\n');
}
await api.stop();
