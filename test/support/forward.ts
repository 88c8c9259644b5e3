/**
 * Makes a loopback port of another network namespace lead to a Unix socket: run inside the
 * namespace, it listens on 127.0.0.1:PORT and pipes every connection to the socket, whose
 * file any namespace can reach. With a listener on the socket in the first namespace (see
 * RealApiServer.reachableFrom), a process in a test namespace reaches a loopback server
 * without any link or route in the root namespace. Prints `ready` once listening.
 *
 *   ip netns exec NS node forward.js --port 6443 --socket /tmp/x.sock
 */
import { connect, createServer } from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { port: { type: 'string' }, socket: { type: 'string' } } });
const server = createServer((c) => {
  const u = connect(values.socket!);
  c.pipe(u).pipe(c);
  const close = () => {
    c.destroy();
    u.destroy();
  };
  c.on('error', close);
  u.on('error', close);
});
server.listen(Number(values.port), '127.0.0.1', () => process.stdout.write('ready\n'));
