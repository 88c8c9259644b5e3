/**
 * A stand-in for the Kubernetes API server, for tests only: the list and watch protocol of
 * Services, EndpointSlices, Nodes and ProxyPolicies, as the real client library uses it.
 * Lists carry a resourceVersion; watches stream newline-delimited events after a given
 * resourceVersion; a watch from before the last compaction gets a 410 Gone ERROR event.
 * ProxyPolicies also have GET and a `status` subresource taking JSON merge patches (RFC 7386)
 * with an optional `metadata.resourceVersion` precondition (409 Conflict when stale); Events
 * can be created and are recorded; /readyz answers ok, or 500 while `notReady`. Tests change
 * objects directly and can drop or silence watches, take the server down, or make a kind's
 * API not exist (a CRD not installed).
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { isDeepStrictEqual } from 'node:util';
import { KubeConfig } from '@kubernetes/client-node';

type Obj = {
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    resourceVersion?: string;
    uid?: string;
    generation?: number;
    creationTimestamp?: string;
  };
} & Record<string, unknown>;

interface Kind {
  /** API path prefix: `/api/v1` or `/apis/GROUP/VERSION`. */
  base: string;
  plural: string;
  kind: string;
  apiVersion: string;
  /** A custom resource with a status subresource: generation, uid and GET/PATCH of status. */
  crd?: boolean;
}

const KINDS: Kind[] = [
  { base: '/api/v1', plural: 'services', kind: 'Service', apiVersion: 'v1' },
  {
    base: '/apis/discovery.k8s.io/v1',
    plural: 'endpointslices',
    kind: 'EndpointSlice',
    apiVersion: 'discovery.k8s.io/v1',
  },
  { base: '/api/v1', plural: 'nodes', kind: 'Node', apiVersion: 'v1' },
  {
    base: '/apis/networking.k8s.io/v1',
    plural: 'servicecidrs',
    kind: 'ServiceCIDR',
    apiVersion: 'networking.k8s.io/v1',
  },
  {
    base: '/apis/nftproxy.dev/v1alpha1',
    plural: 'proxypolicies',
    kind: 'ProxyPolicy',
    apiVersion: 'nftproxy.dev/v1alpha1',
    crd: true,
  },
];

/** `BASE[/namespaces/NS]/PLURAL[/NAME[/status]]` */
const PATH = /^(\/api\/v1|\/apis\/[^/]+\/[^/]+)(?:\/namespaces\/([^/]+))?\/([^/]+)(?:\/([^/]+))?(\/status)?$/;

const isObj = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** RFC 7386: objects merge key by key, null deletes, anything else replaces. */
function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isObj(patch)) return patch;
  const out: Record<string, unknown> = isObj(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

function status(res: ServerResponse, code: number, reason: string, message: string): void {
  res
    .writeHead(code, { 'content-type': 'application/json' })
    .end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', status: 'Failure', reason, code, message }));
}

const notFound = (res: ServerResponse) =>
  status(res, 404, 'NotFound', 'the server could not find the requested resource');

function json(res: ServerResponse, code: number, body: unknown): void {
  res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}

async function readBody(req: IncomingMessage): Promise<string> {
  let body = '';
  for await (const chunk of req) body += String(chunk);
  return body;
}

interface Event {
  rv: number;
  kind: string;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  object: Obj;
}

interface Watcher {
  kind: string;
  res: ServerResponse;
  matches: (o: Obj) => boolean;
  silent: boolean;
}

/** Label selector terms `!key` and `key=value`, and field selector `metadata.name=x`. */
function selector(url: URL): (o: Obj) => boolean {
  const labels = (url.searchParams.get('labelSelector') ?? '').split(',').filter(Boolean);
  const fields = (url.searchParams.get('fieldSelector') ?? '').split(',').filter(Boolean);
  return (o) =>
    labels.every((t) =>
      t.startsWith('!')
        ? o.metadata.labels?.[t.slice(1)] === undefined
        : o.metadata.labels?.[t.split('=')[0]!] === t.split('=')[1],
    ) && fields.every((t) => t !== `metadata.name=${t.split('=')[1]}` || o.metadata.name === t.split('=')[1]);
}

/** The stand-in server. */
export class FakeApiServer {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private readonly objects = new Map<string, Map<string, Obj>>(KINDS.map((k) => [k.kind, new Map()]));
  private readonly history: Event[] = [];
  private readonly watchers = new Set<Watcher>();
  private rv = 1;
  private compactedRV = 0;
  port = 0;
  /**
   * Requests served: `list KIND`, `watch KIND`, `get KIND`, `get KIND/status`,
   * `patch KIND/status`, `create Event`.
   */
  readonly requests: string[] = [];
  /** List pages served (lists asked with a limit). */
  pages = 0;
  /** Delay of list responses (a slow API server). */
  listDelayMs = 0;
  /** Delay of GET responses, which hold the object as it was when asked (to force races). */
  getDelayMs = 0;
  /** Kinds whose list requests fail with 503 (the API is overloaded, say). */
  readonly failLists = new Set<string>();
  /** Kinds whose API does not exist (a CRD not installed): every request gets 404. */
  readonly notInstalled = new Set<string>();
  /** Status patches refused with 409 Conflict because their resourceVersion was stale. */
  conflicts = 0;
  /** Events created, as posted. */
  readonly events: Obj[] = [];
  /** /readyz answers 500 while set (a server still starting). */
  notReady = false;
  /** GETs of /readyz answered. */
  readyzRequests = 0;

  async start(port = 0): Promise<void> {
    this.server = createServer((req, res) => this.handle(req, res));
    this.server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve) => this.server!.listen(port, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
  }

  /** Takes the server down: connections reset, new ones refused. */
  async down(): Promise<void> {
    for (const w of this.watchers) w.res.destroy();
    this.watchers.clear();
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server!.close(() => resolve()));
  }

  /** Brings it back on the same port. */
  async up(): Promise<void> {
    await this.start(this.port);
  }

  async stop(): Promise<void> {
    await this.down().catch(() => undefined);
  }

  /** A kubeconfig for the client library pointing here. */
  kubeConfig(): KubeConfig {
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'fake', server: `http://127.0.0.1:${this.port}`, skipTLSVerify: true }],
      users: [{ name: 'fake' }],
      contexts: [{ name: 'fake', cluster: 'fake', user: 'fake' }],
      currentContext: 'fake',
    });
    return kc;
  }

  /**
   * Creates or replaces an object (its kind from `obj.kind`). Custom resources get a uid and
   * a generation that grows when the spec changes, and keep their status unless one is given.
   */
  apply(obj: Obj & { kind: string }): void {
    const store = this.objects.get(obj.kind)!;
    const key = `${obj.metadata.namespace ?? ''}/${obj.metadata.name}`;
    const old = store.get(key);
    const copy = structuredClone(obj);
    if (KINDS.find((k) => k.kind === obj.kind)!.crd) {
      copy.metadata.uid = old?.metadata.uid ?? randomUUID();
      copy.metadata.creationTimestamp = old?.metadata.creationTimestamp ?? new Date().toISOString();
      const generation = old?.metadata.generation ?? 0;
      copy.metadata.generation = old && isDeepStrictEqual(old.spec, copy.spec) ? generation : generation + 1;
      if (copy.status === undefined && old?.status !== undefined) copy.status = structuredClone(old.status);
    }
    copy.metadata.resourceVersion = String(++this.rv);
    store.set(key, copy);
    this.emit({ rv: this.rv, kind: obj.kind, type: old ? 'MODIFIED' : 'ADDED', object: copy });
  }

  /** The stored object, if any (a copy). */
  get(kind: string, namespace: string, name: string): Obj | undefined {
    const o = this.objects.get(kind)!.get(`${namespace}/${name}`);
    return o && structuredClone(o);
  }

  /** Deletes an object. */
  delete(kind: string, namespace: string, name: string): void {
    const store = this.objects.get(kind)!;
    const key = `${namespace}/${name}`;
    const old = store.get(key);
    if (!old) return;
    store.delete(key);
    const object = {
      ...structuredClone(old),
      metadata: { ...old.metadata, resourceVersion: String(++this.rv) },
    };
    this.emit({ rv: this.rv, kind, type: 'DELETED', object });
  }

  /** Ends every open watch, as an API server restart or a load balancer would. */
  dropWatches(): void {
    for (const w of this.watchers) w.res.end();
    this.watchers.clear();
  }

  /** Open watches stop delivering events while staying connected (a stuck proxy, say). */
  silenceWatches(): void {
    for (const w of this.watchers) w.silent = true;
  }

  /** Forgets history: watches from older resourceVersions get 410 Gone. */
  compact(): void {
    this.compactedRV = this.rv;
    this.history.length = 0;
  }

  /** Number of open watches. */
  get openWatches(): number {
    return this.watchers.size;
  }

  /** Keys of a kind in namespace/name order, kept until an object of the kind changes. */
  private readonly sorted = new Map<string, string[]>();
  private sortedKeys(kind: string): string[] {
    let keys = this.sorted.get(kind);
    if (!keys) this.sorted.set(kind, (keys = [...this.objects.get(kind)!.keys()].sort()));
    return keys;
  }

  private emit(e: Event): void {
    this.sorted.delete(e.kind);
    this.history.push(e);
    for (const w of this.watchers) {
      if (w.kind === e.kind && !w.silent && w.matches(e.object))
        w.res.write(
          JSON.stringify({
            type: e.type,
            object: {
              kind: e.kind,
              apiVersion: KINDS.find((k) => k.kind === e.kind)!.apiVersion,
              ...e.object,
            },
          }) + '\n',
        );
    }
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/readyz' && req.method === 'GET') {
      this.readyzRequests++;
      res.writeHead(this.notReady ? 500 : 200, { 'content-type': 'text/plain' });
      res.end(this.notReady ? '[-]poststarthook/crd-informer-synced failed\nreadyz check failed' : 'ok');
      return;
    }
    const m = PATH.exec(url.pathname);
    if (m?.[1] === '/api/v1' && m[3] === 'events' && m[2] && !m[4] && req.method === 'POST') {
      void this.createEvent(req, res, m[2]);
      return;
    }
    const kind = m && KINDS.find((k) => k.base === m[1] && k.plural === m[3]);
    if (!m || !kind) {
      notFound(res);
      return;
    }
    const [, , namespace, , name, sub] = m;
    if (name === undefined && !sub && req.method === 'GET') this.listOrWatch(url, kind, namespace, res);
    else if (kind.crd && namespace && name && req.method === 'GET')
      this.getObject(kind, namespace, name, !!sub, res);
    else if (kind.crd && namespace && name && sub && req.method === 'PATCH')
      void this.patchStatus(req, kind, namespace, name, res);
    else status(res, 405, 'MethodNotAllowed', `${req.method} ${url.pathname} is not supported here`);
  }

  private listOrWatch(url: URL, kind: Kind, namespace: string | undefined, res: ServerResponse): void {
    const selected = selector(url);
    const matches = (o: Obj) => (!namespace || o.metadata.namespace === namespace) && selected(o);
    if (url.searchParams.get('watch') === 'true') {
      this.requests.push(`watch ${kind.kind}`);
      if (this.notInstalled.has(kind.kind)) return notFound(res);
      const from = Number(url.searchParams.get('resourceVersion') || '0');
      res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
      // Like the real API server, answer the watch request at once; events follow.
      res.flushHeaders();
      if (from < this.compactedRV) {
        res.end(
          JSON.stringify({
            type: 'ERROR',
            object: {
              kind: 'Status',
              apiVersion: 'v1',
              status: 'Failure',
              reason: 'Expired',
              code: 410,
              message: `too old resource version: ${from}`,
            },
          }) + '\n',
        );
        return;
      }
      for (const e of this.history) {
        if (e.kind === kind.kind && e.rv > from && matches(e.object))
          res.write(
            JSON.stringify({
              type: e.type,
              object: { kind: e.kind, apiVersion: kind.apiVersion, ...e.object },
            }) + '\n',
          );
      }
      const w: Watcher = { kind: kind.kind, res, matches, silent: false };
      this.watchers.add(w);
      res.on('close', () => this.watchers.delete(w));
      return;
    }
    this.requests.push(`list ${kind.kind}`);
    if (this.notInstalled.has(kind.kind)) return notFound(res);
    if (this.failLists.has(kind.kind)) {
      res
        .writeHead(503, { 'content-type': 'application/json' })
        .end(JSON.stringify({ kind: 'Status', code: 503, message: 'unavailable' }));
      return;
    }
    // Chunked lists, as the real server does: `limit`, and a `continue` token naming the last
    // object sent (ordered by namespace/name).
    const limit = Number(url.searchParams.get('limit') || '0');
    const after = url.searchParams.get('continue');
    const metadata: Record<string, string> = { resourceVersion: String(this.rv) };
    let items: Obj[];
    if (limit > 0) {
      const sorted = this.sortedKeys(kind.kind);
      let i = 0;
      if (after) {
        const last = Buffer.from(after, 'base64').toString();
        let lo = 0;
        let hi = sorted.length;
        while (lo < hi) {
          const mid = (lo + hi) >> 1;
          if (sorted[mid]! <= last) lo = mid + 1;
          else hi = mid;
        }
        i = lo;
      }
      const store = this.objects.get(kind.kind)!;
      items = [];
      for (; i < sorted.length && items.length < limit; i++) {
        const o = store.get(sorted[i]!);
        if (o && matches(o)) items.push(o);
      }
      if (i < sorted.length) metadata.continue = Buffer.from(sorted[i - 1]!).toString('base64');
      this.pages++;
    } else {
      items = [...this.objects.get(kind.kind)!.values()].filter(matches);
    }
    const body = JSON.stringify({ kind: `${kind.kind}List`, apiVersion: kind.apiVersion, metadata, items });
    setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end(body), this.listDelayMs);
  }

  private getObject(kind: Kind, namespace: string, name: string, sub: boolean, res: ServerResponse): void {
    this.requests.push(`get ${kind.kind}${sub ? '/status' : ''}`);
    if (this.notInstalled.has(kind.kind)) return notFound(res);
    const o = this.objects.get(kind.kind)!.get(`${namespace}/${name}`);
    if (!o)
      return status(res, 404, 'NotFound', `${kind.plural}.${kind.base.split('/')[2]} "${name}" not found`);
    const body = { kind: kind.kind, apiVersion: kind.apiVersion, ...structuredClone(o) };
    setTimeout(() => json(res, 200, body), this.getDelayMs);
  }

  private async patchStatus(
    req: IncomingMessage,
    kind: Kind,
    namespace: string,
    name: string,
    res: ServerResponse,
  ): Promise<void> {
    this.requests.push(`patch ${kind.kind}/status`);
    if (this.notInstalled.has(kind.kind)) return notFound(res);
    const text = await readBody(req);
    if (req.headers['content-type'] !== 'application/merge-patch+json') {
      return status(res, 415, 'UnsupportedMediaType', `not a merge patch: ${req.headers['content-type']}`);
    }
    const patch: unknown = JSON.parse(text);
    const store = this.objects.get(kind.kind)!;
    const key = `${namespace}/${name}`;
    const cur = store.get(key);
    if (!cur) return status(res, 404, 'NotFound', `${kind.plural} "${name}" not found`);
    const rv = isObj(patch) && isObj(patch.metadata) ? patch.metadata.resourceVersion : undefined;
    if (rv !== undefined && rv !== cur.metadata.resourceVersion) {
      this.conflicts++;
      return status(
        res,
        409,
        'Conflict',
        `Operation cannot be fulfilled on ${kind.plural} "${name}": the object has been modified; ` +
          'please apply your changes to the latest version and try again',
      );
    }
    // The status subresource ignores changes to anything but status.
    const merged = mergePatch(cur, patch) as Obj;
    const next: Obj = { ...structuredClone(cur) };
    if (merged.status === undefined) delete next.status;
    else next.status = merged.status;
    if (!isDeepStrictEqual(next, cur)) {
      next.metadata.resourceVersion = String(++this.rv);
      store.set(key, next);
      this.emit({ rv: this.rv, kind: kind.kind, type: 'MODIFIED', object: next });
    }
    json(res, 200, { kind: kind.kind, apiVersion: kind.apiVersion, ...store.get(key) });
  }

  private async createEvent(req: IncomingMessage, res: ServerResponse, namespace: string): Promise<void> {
    this.requests.push('create Event');
    const event = JSON.parse(await readBody(req)) as Obj;
    if (event.metadata?.namespace && event.metadata.namespace !== namespace) {
      return status(res, 400, 'BadRequest', 'the namespace of the object does not match the request');
    }
    const name = event.metadata?.name;
    if (name && this.events.some((e) => e.metadata.name === name && e.metadata.namespace === namespace))
      return status(res, 409, 'AlreadyExists', `events "${name}" already exists`);
    event.metadata = {
      ...event.metadata,
      namespace,
      uid: randomUUID(),
      resourceVersion: String(++this.rv),
    };
    this.events.push(event);
    json(res, 201, event);
  }
}
