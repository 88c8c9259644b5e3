/**
 * A client for kernel tests: makes COUNT new connections (TCP) or new flows (UDP, a fresh
 * socket each, so conntrack sees a new flow) to HOST:PORT one after another, and prints a
 * JSON array with, for each, the server's answer or the error (ECONNREFUSED for a TCP reset
 * or an ICMP port unreachable, ETIMEDOUT when nothing came back).
 *
 * With --duration MS it keeps going that long instead, INTERVAL ms apart. With --steady
 * (UDP), it sends on one socket, one flow, INTERVAL ms apart for --duration, and reports
 * each datagram's answer: that flow's conntrack entry decides where they all go. With
 * --source ADDR (repeatable), TCP connections use these local addresses in turn.
 */
import { createSocket } from 'node:dgram';
import { connect } from 'node:net';
import { isIPv6 } from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    host: { type: 'string' },
    port: { type: 'string' },
    protocol: { type: 'string', default: 'tcp' },
    count: { type: 'string', default: '1' },
    timeout: { type: 'string', default: '2000' },
    duration: { type: 'string' },
    interval: { type: 'string', default: '20' },
    steady: { type: 'boolean', default: false },
    /** Source addresses to use in turn, one per connection (many clients from one host). */
    source: { type: 'string', multiple: true },
  },
});
const sources = values.source ?? [];
let nextSource = 0;
/** The local address of the next TCP connection, if sources were given. */
const localAddress = (): { localAddress?: string } =>
  sources.length ? { localAddress: sources[nextSource++ % sources.length]! } : {};
const host = values.host!;
const port = Number(values.port);
const timeout = Number(values.timeout);

interface Result {
  ok: boolean;
  server?: string;
  seenFrom?: string;
  error?: string;
  ms: number;
}

function parse(reply: string, start: number): Result {
  const [server, seenFrom] = reply.trim().split(' ');
  return { ok: true, server: server!, seenFrom: seenFrom!, ms: Date.now() - start };
}

function tcp(): Promise<Result> {
  const start = Date.now();
  return new Promise((resolve) => {
    let data = '';
    const sock = connect({ host, port, timeout, ...localAddress() });
    sock.on('data', (d) => (data += d.toString()));
    sock.on('end', () => resolve(parse(data, start)));
    sock.on('timeout', () => {
      sock.destroy();
      resolve({ ok: false, error: 'ETIMEDOUT', ms: Date.now() - start });
    });
    sock.on('error', (e: NodeJS.ErrnoException) =>
      resolve({ ok: false, error: e.code ?? e.message, ms: Date.now() - start }),
    );
  });
}

function udp(): Promise<Result> {
  const start = Date.now();
  return new Promise((resolve) => {
    const sock = createSocket(isIPv6(host) ? 'udp6' : 'udp4');
    const done = (r: Result) => {
      clearTimeout(timer);
      sock.close();
      resolve(r);
    };
    const timer = setTimeout(() => done({ ok: false, error: 'ETIMEDOUT', ms: Date.now() - start }), timeout);
    sock.on('message', (msg) => done(parse(msg.toString(), start)));
    // A connected socket reports ICMP port unreachable as ECONNREFUSED.
    sock.on('error', (e: NodeJS.ErrnoException) =>
      done({ ok: false, error: e.code ?? e.message, ms: Date.now() - start }),
    );
    sock.connect(port, host, () => sock.send('hello'));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const interval = Number(values.interval);

/** One UDP flow: datagrams on one socket; each answer (or silence) recorded. */
async function steady(durationMs: number): Promise<Result[]> {
  const sock = createSocket(isIPv6(host) ? 'udp6' : 'udp4');
  await new Promise<void>((resolve) => sock.connect(port, host, resolve));
  const out: Result[] = [];
  let waiting: ((r: Result) => void) | undefined;
  sock.on('message', (msg) => waiting?.(parse(msg.toString(), Date.now())));
  sock.on('error', (e: NodeJS.ErrnoException) => waiting?.({ ok: false, error: e.code ?? e.message, ms: 0 }));
  const end = Date.now() + durationMs;
  while (Date.now() < end) {
    const start = Date.now();
    const r = await new Promise<Result>((resolve) => {
      const timer = setTimeout(
        () => resolve({ ok: false, error: 'ETIMEDOUT', ms: Date.now() - start }),
        Math.min(timeout, 500),
      );
      waiting = (x) => {
        clearTimeout(timer);
        resolve({ ...x, ms: Date.now() - start });
      };
      sock.send('hello');
    });
    waiting = undefined;
    out.push(r);
    await sleep(interval);
  }
  sock.close();
  return out;
}

const results: Result[] = [];
if (values.steady) {
  results.push(...(await steady(Number(values.duration ?? 1000))));
} else if (values.duration) {
  const end = Date.now() + Number(values.duration);
  while (Date.now() < end) {
    results.push(await (values.protocol === 'udp' ? udp() : tcp()));
    await sleep(interval);
  }
} else {
  for (let i = 0; i < Number(values.count); i++)
    results.push(await (values.protocol === 'udp' ? udp() : tcp()));
}
process.stdout.write(JSON.stringify(results));
