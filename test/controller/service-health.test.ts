/**
 * The health check node ports of externalTrafficPolicy: Local services, on loopback.
 */
import type { NetworkInterfaceInfo } from 'node:os';
import { parseProxyConfig } from '../../src/proxy/config.js';
import assert from 'node:assert/strict';
import { Agent, get, type IncomingHttpHeaders } from 'node:http';
import { createServer, type AddressInfo, type Server } from 'node:net';
import {
  healthCheckHosts,
  ServiceHealthServer,
  type ServiceHealthState,
} from '../../src/controller/service-health.js';
import { silentLogger } from '../../src/telemetry/log.js';

const HOST = '127.0.0.1';

/** `n` distinct ports free on loopback: all held at once, then released. */
async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(Array.from({ length: n }, () => listenTcp(0)));
  const ports = servers.map((s) => (s.address() as AddressInfo).port);
  await Promise.all(servers.map(closeTcp));
  return ports;
}

function listenTcp(port: number, host = HOST): Promise<Server> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(port, host, () => resolve(s));
  });
}

function closeTcp(s: Server): Promise<void> {
  return new Promise((resolve) => s.close(() => resolve()));
}

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: unknown;
  /** The client's port: the same one means the same connection. */
  localPort: number;
}

function request(port: number, path = '/', agent: Agent | false = false, host = HOST): Promise<Reply> {
  return new Promise((resolve, reject) => {
    get({ host, port, path, agent }, (res) => {
      const localPort = res.socket.localPort!;
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () =>
        resolve({ status: res.statusCode!, headers: res.headers, body: JSON.parse(text), localPort }),
      );
    }).on('error', reject);
  });
}

const refused = (port: number) => assert.rejects(request(port), { code: 'ECONNREFUSED' });

const services = (entries: Record<string, ServiceHealthState>) => new Map(Object.entries(entries));

describe('service health check node ports', () => {
  let healthy: boolean;
  let errors: (Record<string, unknown> | undefined)[];
  let hs: ServiceHealthServer;
  let hosts: string[];

  beforeEach(() => {
    hosts = [HOST];
    healthy = true;
    errors = [];
    hs = new ServiceHealthServer({
      hosts: () => hosts,
      proxyHealthy: () => healthy,
      log: { ...silentLogger, error: (_msg, fields) => errors.push(fields) },
    });
  });
  afterEach(() => hs.close());

  it('answers 200 on any path with the local endpoint count when the service has local endpoints', async () => {
    const [port] = await freePorts(1);
    assert.deepEqual(await hs.update(services({ 'shop/web': { port: port!, localEndpoints: 2 } })), []);
    for (const path of ['/', '/healthz', '/anything?x=1']) {
      const r = await request(port!, path);
      assert.equal(r.status, 200, path);
      assert.deepEqual(r.body, {
        service: { namespace: 'shop', name: 'web' },
        localEndpoints: 2,
        serviceProxyHealthy: true,
      });
      assert.equal(r.headers['content-type'], 'application/json');
      assert.equal(r.headers['x-content-type-options'], 'nosniff');
      assert.equal(r.headers['x-load-balancing-endpoint-weight'], '2');
    }
  });

  it('answers 503 when the service has no local endpoint', async () => {
    const [port] = await freePorts(1);
    await hs.update(services({ 'shop/web': { port: port!, localEndpoints: 0 } }));
    const r = await request(port!);
    assert.equal(r.status, 503);
    assert.deepEqual(r.body, {
      service: { namespace: 'shop', name: 'web' },
      localEndpoints: 0,
      serviceProxyHealthy: true,
    });
    assert.equal(r.headers['x-load-balancing-endpoint-weight'], '0');
  });

  it('answers 503 while the proxy is unhealthy, even with local endpoints, asking on every request', async () => {
    const [port] = await freePorts(1);
    await hs.update(services({ 'shop/web': { port: port!, localEndpoints: 3 } }));
    healthy = false;
    const sick = await request(port!);
    assert.equal(sick.status, 503);
    assert.deepEqual(sick.body, {
      service: { namespace: 'shop', name: 'web' },
      localEndpoints: 3,
      serviceProxyHealthy: false,
    });
    healthy = true;
    assert.equal((await request(port!)).status, 200);
  });

  it('takes a throwing proxy health callback for unhealthy', async () => {
    const [port] = await freePorts(1);
    await hs.close();
    hs = new ServiceHealthServer({
      hosts: () => hosts,
      proxyHealthy: () => {
        throw new Error('no verdict');
      },
    });
    await hs.update(services({ 'shop/web': { port: port!, localEndpoints: 1 } }));
    const r = await request(port!);
    assert.equal(r.status, 503);
    assert.equal((r.body as { serviceProxyHealthy: boolean }).serviceProxyHealthy, false);
  });

  it('takes a new endpoint count on the same socket, without reopening', async () => {
    const [port] = await freePorts(1);
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      await hs.update(services({ 'shop/web': { port: port!, localEndpoints: 1 } }));
      const before = await request(port!, '/', agent);
      assert.equal(before.status, 200);
      assert.deepEqual(await hs.update(services({ 'shop/web': { port: port!, localEndpoints: 0 } })), []);
      const after = await request(port!, '/', agent);
      assert.equal(after.localPort, before.localPort, 'the kept-alive connection survived the update');
      assert.equal(after.status, 503);
      assert.equal((after.body as { localEndpoints: number }).localEndpoints, 0);
    } finally {
      agent.destroy();
    }
  });

  it('moves the listener when the port changes', async () => {
    const [p1, p2] = await freePorts(2);
    await hs.update(services({ 'shop/web': { port: p1!, localEndpoints: 1 } }));
    assert.equal((await request(p1!)).status, 200);
    assert.deepEqual(await hs.update(services({ 'shop/web': { port: p2!, localEndpoints: 1 } })), []);
    assert.equal((await request(p2!)).status, 200);
    await refused(p1!);
  });

  it('closes the listener of a removed service and keeps the others', async () => {
    const [p1, p2] = await freePorts(2);
    await hs.update(
      services({
        'shop/web': { port: p1!, localEndpoints: 1 },
        'shop/api': { port: p2!, localEndpoints: 1 },
      }),
    );
    await hs.update(services({ 'shop/api': { port: p2!, localEndpoints: 1 } }));
    await refused(p1!);
    assert.equal((await request(p2!)).status, 200);
  });

  it('reports a port taken by another socket, serves the others, and binds it once freed', async () => {
    const [taken, other] = await freePorts(2);
    const squatter = await listenTcp(taken!);
    const want = services({
      'shop/web': { port: taken!, localEndpoints: 1 },
      'shop/api': { port: other!, localEndpoints: 1 },
    });
    const problems = await hs.update(want);
    assert.equal(problems.length, 1);
    assert.equal(problems[0]!.service, 'shop/web');
    assert.equal(problems[0]!.port, taken);
    assert.match(problems[0]!.message, /EADDRINUSE/);
    assert.match(problems[0]!.message, new RegExp(`shop/web.*${taken}`));
    assert.deepEqual(
      errors.map((f) => [f?.service, f?.port]),
      [['shop/web', taken]],
    );
    assert.equal((await request(other!)).status, 200);

    await closeTcp(squatter);
    assert.deepEqual(await hs.update(want), []);
    const r = await request(taken!);
    assert.equal(r.status, 200);
    assert.deepEqual((r.body as { service: unknown }).service, { namespace: 'shop', name: 'web' });
  });

  it('listens on the given addresses only, one listener each, and follows them as they change', async () => {
    const [port] = await freePorts(1);
    hosts = ['127.0.0.2', '127.0.0.3'];
    assert.deepEqual(await hs.update(services({ 'shop/web': { port: port!, localEndpoints: 1 } })), []);
    for (const h of hosts) assert.equal((await request(port!, '/', false, h)).status, 200, h);
    await assert.rejects(request(port!, '/', false, '127.0.0.4'), { code: 'ECONNREFUSED' });
    await refused(port!); // 127.0.0.1 is not one of them
    hosts = ['127.0.0.4'];
    assert.deepEqual(await hs.update(services({ 'shop/web': { port: port!, localEndpoints: 1 } })), []);
    assert.equal((await request(port!, '/', false, '127.0.0.4')).status, 200);
    await assert.rejects(request(port!, '/', false, '127.0.0.2'), { code: 'ECONNREFUSED' });
  });

  it('serves all of its addresses or none, naming the one that failed', async () => {
    const [port] = await freePorts(1);
    const squatter = await listenTcp(port!, '127.0.0.3');
    try {
      hosts = ['127.0.0.2', '127.0.0.3'];
      const problems = await hs.update(services({ 'shop/web': { port: port!, localEndpoints: 1 } }));
      assert.equal(problems.length, 1);
      assert.match(problems[0]!.message, new RegExp(`127\\.0\\.0\\.3:${port}: .*EADDRINUSE`));
      await assert.rejects(request(port!, '/', false, '127.0.0.2'), { code: 'ECONNREFUSED' });
    } finally {
      await closeTcp(squatter);
    }
  });

  it('serves one service per port and reports the other one claiming it', async () => {
    const [port] = await freePorts(1);
    await hs.update(services({ 'shop/web': { port: port!, localEndpoints: 1 } }));
    const problems = await hs.update(
      services({
        'shop/web': { port: port!, localEndpoints: 1 },
        'shop/api': { port: port!, localEndpoints: 0 },
      }),
    );
    assert.deepEqual(
      problems.map((p) => [p.service, p.port]),
      [['shop/api', port]],
    );
    assert.match(problems[0]!.message, /shop\/web/);
    assert.equal((await request(port!)).status, 200, 'still the first service answering');
  });

  it('hands a port from a removed service to a new one in the same update', async () => {
    const [port] = await freePorts(1);
    await hs.update(services({ 'shop/web': { port: port!, localEndpoints: 1 } }));
    assert.deepEqual(await hs.update(services({ 'shop/api': { port: port!, localEndpoints: 0 } })), []);
    const r = await request(port!);
    assert.equal(r.status, 503);
    assert.deepEqual((r.body as { service: unknown }).service, { namespace: 'shop', name: 'api' });
  });

  it('reports invalid entries, quoting them, and serves the valid ones', async () => {
    const [port] = await freePorts(1);
    const problems = await hs.update(
      services({
        'shop/web': { port: port!, localEndpoints: 1 },
        'shop/zero': { port: 0, localEndpoints: 1 },
        'shop/big': { port: 70000, localEndpoints: 1 },
        'shop/minus': { port: port! + 1, localEndpoints: -1 },
        noslash: { port: port! + 2, localEndpoints: 1 },
      }),
    );
    assert.deepEqual(
      problems.map((p) => [p.service, p.message]),
      [
        ['shop/zero', 'Not a valid health check node port: 0 in service shop/zero'],
        ['shop/big', 'Not a valid health check node port: 70000 in service shop/big'],
        ['shop/minus', 'Not a valid local endpoint count: -1 in service shop/minus'],
        ['noslash', 'Not a namespace/name service key: "noslash"'],
      ],
    );
    assert.equal((await request(port!)).status, 200);
  });

  it('closes every listener on close, and opens none afterwards', async () => {
    const [p1, p2] = await freePorts(2);
    const want = services({
      'shop/web': { port: p1!, localEndpoints: 1 },
      'shop/api': { port: p2!, localEndpoints: 0 },
    });
    await hs.update(want);
    assert.equal((await request(p1!)).status, 200);
    assert.equal((await request(p2!)).status, 503);
    await hs.close();
    await refused(p1!);
    await refused(p2!);
    assert.deepEqual(await hs.update(want), []);
    await refused(p1!);
  });
});

describe('where health check node ports listen', () => {
  const config = (cidrs: string[], primary = false) => {
    const c = parseProxyConfig({
      nodeName: 'n1',
      nodePortAddresses: [...cidrs, ...(primary ? ['primary'] : [])],
    });
    return { nodePortCIDRs: c.nodePortCIDRs, nodePortPrimary: c.nodePortPrimary };
  };
  const ifaces = {
    lo: [{ address: '127.0.0.1' }, { address: '::1' }],
    eth0: [{ address: '192.168.50.1' }, { address: 'fd00:50::1' }],
    eth1: [{ address: '10.0.0.7' }],
  } as unknown as NodeJS.Dict<NetworkInterfaceInfo[]>;

  it('every address without nodePortAddresses', () => {
    assert.equal(healthCheckHosts(config([]), ['192.168.50.1'], ifaces), undefined);
  });

  it("the node's addresses inside nodePortAddresses, and its node IPs for primary", () => {
    assert.deepEqual(healthCheckHosts(config(['192.168.50.0/24']), [], ifaces), ['192.168.50.1']);
    assert.deepEqual(healthCheckHosts(config(['192.168.50.0/24', 'fd00:50::/64']), [], ifaces), [
      '192.168.50.1',
      'fd00:50::1',
    ]);
    assert.deepEqual(healthCheckHosts(config([], true), ['10.0.0.7'], ifaces), ['10.0.0.7']);
    assert.deepEqual(healthCheckHosts(config(['172.16.0.0/12']), [], ifaces), [], 'none matches: none');
  });
});
