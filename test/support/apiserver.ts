/**
 * A stand-in for the Kubernetes API server, for tests only: the list and watch protocol of
 * Services, EndpointSlices and Nodes, as the real client library uses it. Lists carry a
 * resourceVersion; watches stream newline-delimited events after a given resourceVersion;
 * a watch from before the last compaction gets a 410 Gone ERROR event. Tests change
 * objects directly and can drop or silence watches, or take the server down.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';

type Obj = {
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; resourceVersion?: string };
} & Record<string, unknown>;

interface Kind {
  path: string;
  kind: string;
  apiVersion: string;
}

const KINDS: Kind[] = [
  { path: '/api/v1/services', kind: 'Service', apiVersion: 'v1' },
  {
    path: '/apis/discovery.k8s.io/v1/endpointslices',
    kind: 'EndpointSlice',
    apiVersion: 'discovery.k8s.io/v1',
  },
  { path: '/api/v1/nodes', kind: 'Node', apiVersion: 'v1' },
];

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
  /** Requests served, by `list KIND` / `watch KIND`. */
  readonly requests: string[] = [];
  /** Delay of list responses (a slow API server). */
  listDelayMs = 0;
  /** Kinds whose list requests fail with 503 (the API is overloaded, say). */
  readonly failLists = new Set<string>();

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

  /** Creates or replaces an object (its kind from `obj.kind`). */
  apply(obj: Obj & { kind: string }): void {
    const store = this.objects.get(obj.kind)!;
    const key = `${obj.metadata.namespace ?? ''}/${obj.metadata.name}`;
    const type = store.has(key) ? 'MODIFIED' : 'ADDED';
    const copy = structuredClone(obj);
    copy.metadata.resourceVersion = String(++this.rv);
    store.set(key, copy);
    this.emit({ rv: this.rv, kind: obj.kind, type, object: copy });
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

  private emit(e: Event): void {
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
    const kind = KINDS.find((k) => k.path === url.pathname);
    if (!kind || req.method !== 'GET') {
      res.writeHead(404).end();
      return;
    }
    const matches = selector(url);
    if (url.searchParams.get('watch') === 'true') {
      this.requests.push(`watch ${kind.kind}`);
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
    if (this.failLists.has(kind.kind)) {
      res
        .writeHead(503, { 'content-type': 'application/json' })
        .end(JSON.stringify({ kind: 'Status', code: 503, message: 'unavailable' }));
      return;
    }
    const items = [...this.objects.get(kind.kind)!.values()].filter(matches);
    const body = JSON.stringify({
      kind: `${kind.kind}List`,
      apiVersion: kind.apiVersion,
      metadata: { resourceVersion: String(this.rv) },
      items,
    });
    setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end(body), this.listDelayMs);
  }
}
