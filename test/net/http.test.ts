/**
 * The route server behind /metrics, /healthz and /livez: fixed GET/HEAD paths, 404, 405, a
 * failing route as a 500 that says why, nosniff on every answer, a bind address checked.
 */
import assert from 'node:assert/strict';
import { BindError, type Route, RouteServer } from '../../src/net/http.js';

describe('RouteServer', () => {
  let server: RouteServer | undefined;
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  it('answers its paths to GET and HEAD, 404 elsewhere, 405 for other methods', async () => {
    let hits = 0;
    const routes = new Map<string, Route>([
      ['/count', async () => ({ status: 200, type: 'text/plain', body: `${++hits}\n` })],
      ['/broken', () => Promise.reject(new Error('the kernel said no'))],
    ]);
    server = new RouteServer(routes);
    const port = await server.listen('127.0.0.1:0', 'test');
    const url = (p: string) => `http://127.0.0.1:${port}${p}`;
    const first = await fetch(url('/count'));
    assert.equal(first.status, 200);
    assert.equal(first.headers.get('content-type'), 'text/plain');
    assert.equal(first.headers.get('x-content-type-options'), 'nosniff');
    assert.equal(await first.text(), '1\n');
    assert.equal(await (await fetch(url('/count?x=1'))).text(), '2\n', 'the query is ignored');
    const head = await fetch(url('/count'), { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(await head.text(), '', 'HEAD has no body');
    assert.equal(hits, 3, 'HEAD runs the route too');
    assert.equal((await fetch(url('/'))).status, 404);
    assert.equal((await fetch(url('/countx'))).status, 404);
    const post = await fetch(url('/count'), { method: 'POST' });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get('allow'), 'GET, HEAD');
    assert.equal(hits, 3, 'a refused method does not run the route');
    const broken = await fetch(url('/broken'));
    assert.equal(broken.status, 500);
    assert.equal(await broken.text(), 'cannot answer /broken: the kernel said no\n');
    await server.close();
    await assert.rejects(fetch(url('/count')), 'closed');
  });

  it('refuses a bind address without a port, quoting it', async () => {
    server = new RouteServer(new Map());
    await assert.rejects(
      server.listen('localhost', 'metrics'),
      (e: unknown) =>
        e instanceof BindError && /metrics bind address: want host:port, got "localhost"/.test(e.message),
    );
  });
});
