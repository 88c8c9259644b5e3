/**
 * A pod's server for kernel tests: TCP and UDP on the given ports, IPv4 and IPv6, answering
 * every connection or datagram with `NAME SOURCE-ADDRESS`, the address the pod saw.
 * Prints `ready` once every port listens.
 */
import { createSocket } from 'node:dgram';
import { createServer } from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    name: { type: 'string' },
    tcp: { type: 'string', multiple: true },
    udp: { type: 'string', multiple: true },
  },
});
const name = values.name ?? 'server';
const plain = (addr: string | undefined) => (addr ?? '?').replace(/^::ffff:/, '');

const listening: Promise<void>[] = [];
for (const port of values.tcp ?? []) {
  const server = createServer((sock) => {
    sock.on('error', () => undefined);
    sock.end(`${name} ${plain(sock.remoteAddress)}\n`);
  });
  listening.push(
    new Promise((resolve) => server.listen({ port: Number(port), host: '::', ipv6Only: false }, resolve)),
  );
}
for (const port of values.udp ?? []) {
  const sock = createSocket({ type: 'udp6', ipv6Only: false });
  sock.on('message', (_msg, rinfo) =>
    sock.send(`${name} ${plain(rinfo.address)}\n`, rinfo.port, rinfo.address),
  );
  listening.push(new Promise((resolve) => sock.bind(Number(port), '::', resolve)));
}
await Promise.all(listening);
process.stdout.write('ready\n');
