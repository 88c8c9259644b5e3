/**
 * The client of the connection-latency benchmark, run inside a client namespace: opens
 * COUNT new TCP connections to each target, the targets in turn (so that every target sees
 * the same conditions), and prints, as JSON, each target's connect times in ms: from
 * connect() until the handshake completed (SYN out, SYN-ACK back). Each connection's first
 * packet is a new flow, so it goes through the node's NAT rules.
 *
 *   node --import tsx bench/lib/connect.ts --count 500 --target 10.96.0.1:80 --target ...
 */
import { connect } from 'node:net';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    count: { type: 'string', default: '200' },
    target: { type: 'string', multiple: true, default: [] },
  },
});

function once(host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const start = performance.now();
    const s = connect({ host, port, timeout: 2000 });
    s.once('connect', () => {
      const ms = performance.now() - start;
      s.destroy();
      resolve(ms);
    });
    s.once('timeout', () => {
      s.destroy();
      reject(new Error(`${host}:${port}: timed out`));
    });
    s.once('error', reject);
  });
}

const targets = values.target.map((t) => {
  const i = t.lastIndexOf(':');
  return { text: t, host: t.slice(0, i), port: Number(t.slice(i + 1)) };
});
const out: Record<string, number[]> = Object.fromEntries(targets.map((t) => [t.text, []]));
// A few connections first, unmeasured: ARP/neighbour entries, route caches, JIT.
for (const t of targets) for (let i = 0; i < 5; i++) await once(t.host, t.port);
for (let i = 0; i < Number(values.count); i++)
  for (const t of targets) out[t.text]!.push(await once(t.host, t.port));
process.stdout.write(JSON.stringify(out));
