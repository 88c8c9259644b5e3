/**
 * A real Kubernetes API server for tests, as controller-runtime's envtest gives one: Debian's
 * etcd and kube-apiserver v1.20.2 (built by scripts/kube-build, cached outside the repo),
 * on loopback ports of their own, with a PKI made for the run by openssl, RBAC on, and an
 * admin identity (a client certificate in system:masters). etcd keeps its data in /dev/shm.
 *
 * 1.20 has no discovery.k8s.io/v1: the server starts with v1beta1 off and EndpointSlice v1
 * is served through a CRD, so that list and watch of slices are the real server's (its
 * schema keeps every field; the real type's validation is not there).
 *
 * Processes are tracked by pid and killed in `stop`, and at process exit if a run was cut
 * short. `stopApiServer`/`startApiServer` make an outage: etcd keeps the data, the server
 * comes back on the same port with the same certificates.
 */
import { needs } from './require.js';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { startForwarder, type Netns } from './netns.js';
import { join } from 'node:path';
import { request as httpsRequest, type RequestOptions } from 'node:https';
import { KubeConfig, type KubernetesObject } from '@kubernetes/client-node';
import { execa } from 'execa';

/** Where scripts/kube-build puts the binaries. */
export const KUBE_BIN = join(process.env.NFTPROXY_KUBE_CACHE ?? '/var/cache/nftproxy/kube-1.20.2', 'bin');

const live = new Set<ChildProcess>();
const dirs = new Set<string>();
process.on('exit', () => {
  for (const p of live) p.kill('SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** Why a real API server cannot run here, or undefined when it can. */
export function realApiServerMissing(): string | undefined {
  if (!existsSync(join(KUBE_BIN, 'kube-apiserver')))
    return `no kube-apiserver in ${KUBE_BIN}: run scripts/kube-build (scripts/test does)`;
  try {
    execFileSync('sh', ['-c', 'command -v etcd && command -v openssl'], { stdio: 'ignore' });
  } catch {
    return 'etcd or openssl missing: run scripts/kube-build (scripts/test does)';
  }
  return undefined;
}

/**
 * For a `before` hook: skips the suite when no real API server can run here, except under
 * CI, where a missing one is a failure (scripts/test builds it).
 */
export function requireRealApiServer(ctx: Mocha.Context): void {
  needs(ctx, realApiServerMissing());
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The CRD that serves discovery.k8s.io/v1 EndpointSlices on a 1.20 server. */
const ENDPOINTSLICE_V1_CRD = {
  apiVersion: 'apiextensions.k8s.io/v1',
  kind: 'CustomResourceDefinition',
  metadata: {
    name: 'endpointslices.discovery.k8s.io',
    // A *.k8s.io group asks for an approval link; this is a test server.
    annotations: { 'api-approved.kubernetes.io': 'unapproved, test-only stand-in for the built-in type' },
  },
  spec: {
    group: 'discovery.k8s.io',
    scope: 'Namespaced',
    names: {
      plural: 'endpointslices',
      singular: 'endpointslice',
      kind: 'EndpointSlice',
      listKind: 'EndpointSliceList',
    },
    versions: [
      {
        name: 'v1',
        served: true,
        storage: true,
        schema: { openAPIV3Schema: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true } },
      },
    ],
  },
};

function openssl(dir: string, ...args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** A CA, a serving certificate for 127.0.0.1, an admin client certificate, service account keys. */
function makePki(dir: string): void {
  openssl(
    dir,
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-days',
    '2',
    '-subj',
    '/CN=nftproxy-test-ca',
    '-keyout',
    'ca.key',
    '-out',
    'ca.crt',
  );
  const sign = (name: string, subj: string, ext: string) => {
    writeFileSync(join(dir, `${name}.ext`), ext);
    openssl(
      dir,
      'req',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-subj',
      subj,
      '-keyout',
      `${name}.key`,
      '-out',
      `${name}.csr`,
    );
    openssl(
      dir,
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      'ca.crt',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-days',
      '2',
      '-extfile',
      `${name}.ext`,
      '-out',
      `${name}.crt`,
    );
  };
  sign(
    'server',
    '/CN=kube-apiserver',
    'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n',
  );
  sign('admin', '/O=system:masters/CN=nftproxy-test-admin', 'extendedKeyUsage=clientAuth\n');
  openssl(dir, 'genrsa', '-out', 'sa.key', '2048');
  openssl(dir, 'rsa', '-in', 'sa.key', '-pubout', '-out', 'sa.pub');
}

/** Options of a real API server. */
export interface RealApiServerOptions {
  /** Service ClusterIP range. Default 10.96.0.0/16. */
  serviceCIDR?: string;
}

/** etcd and kube-apiserver, running until `stop`. */
export class RealApiServer {
  private etcd: ChildProcess | undefined;
  private apiserver: ChildProcess | undefined;
  private readonly resources = new Map<string, { plural: string; namespaced: boolean }>();

  private constructor(
    /** Working directory: PKI, logs, kubeconfig (etcd's data is in /dev/shm). */
    readonly dir: string,
    private readonly etcdDir: string,
    private readonly ports: { etcd: number; peer: number; api: number },
    private readonly opts: RealApiServerOptions,
  ) {}

  /** Starts etcd and the API server, waits until it is ready and serves EndpointSlice v1. */
  static async start(opts: RealApiServerOptions = {}): Promise<RealApiServer> {
    const dir = mkdtempSync('/tmp/nftp-apiserver-');
    const etcdDir = mkdtempSync('/dev/shm/nftp-etcd-');
    dirs.add(dir).add(etcdDir);
    const s = new RealApiServer(
      dir,
      etcdDir,
      { etcd: await freePort(), peer: await freePort(), api: await freePort() },
      opts,
    );
    try {
      makePki(dir);
      s.startEtcd();
      await s.startApiServer();
      await s.apply(ENDPOINTSLICE_V1_CRD);
      await s.until(
        async () => (await s.get('/apis/discovery.k8s.io/v1/endpointslices')).status === 200,
        30_000,
        'EndpointSlice v1 CRD served',
      );
      writeFileSync(join(dir, 'kubeconfig'), s.kubeConfig().exportConfig());
    } catch (e) {
      const tail = (f: string) => {
        try {
          return readFileSync(join(dir, f), 'utf8').split('\n').slice(-15).join('\n');
        } catch {
          return '(no log)';
        }
      };
      const message = `${(e as Error).message}\n--- etcd.log\n${tail('etcd.log')}\n--- kube-apiserver.log\n${tail('kube-apiserver.log')}`;
      await s.stop();
      throw new Error(message);
    }
    return s;
  }

  /** https://127.0.0.1:PORT */
  get url(): string {
    return `https://127.0.0.1:${this.ports.api}`;
  }

  /** A kubeconfig file with the admin identity (for kubectl and `nftproxy run`). */
  get kubeconfigPath(): string {
    return join(this.dir, 'kubeconfig');
  }

  /** Runs the built kubectl as admin against this server. */
  kubectl(...args: string[]) {
    return execa(join(KUBE_BIN, 'kubectl'), ['--kubeconfig', this.kubeconfigPath, ...args]);
  }

  /** The admin identity (system:masters). */
  kubeConfig(): KubeConfig {
    return this.kubeConfigFor({
      name: 'admin',
      certFile: join(this.dir, 'admin.crt'),
      keyFile: join(this.dir, 'admin.key'),
    });
  }

  /** Another identity on this server: a bearer token, or a client certificate. */
  kubeConfigFor(user: { name: string; token?: string; certFile?: string; keyFile?: string }): KubeConfig {
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'real', server: this.url, caFile: join(this.dir, 'ca.crt') }],
      users: [user],
      contexts: [{ name: 'real', cluster: 'real', user: user.name }],
      currentContext: 'real',
    });
    return kc;
  }

  /**
   * The identity of a ServiceAccount, with a token from the TokenRequest API: it may do what
   * RBAC grants that account, nothing more.
   */
  async serviceAccountKubeConfig(namespace: string, name: string): Promise<KubeConfig> {
    const r = await this.request('POST', `/api/v1/namespaces/${namespace}/serviceaccounts/${name}/token`, {
      apiVersion: 'authentication.k8s.io/v1',
      kind: 'TokenRequest',
      spec: { expirationSeconds: 3600 },
    });
    if (r.status !== 201 && r.status !== 200) throw new Error(`TokenRequest: ${r.status} ${r.body}`);
    const token = (JSON.parse(r.body) as { status: { token: string } }).status.token;
    return this.kubeConfigFor({ name: `system:serviceaccount:${namespace}:${name}`, token });
  }

  private startEtcd(): void {
    const { etcd, peer } = this.ports;
    this.etcd = this.spawn('etcd', 'etcd', [
      '--name=test',
      `--data-dir=${this.etcdDir}`,
      `--listen-client-urls=http://127.0.0.1:${etcd}`,
      `--advertise-client-urls=http://127.0.0.1:${etcd}`,
      `--listen-peer-urls=http://127.0.0.1:${peer}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${peer}`,
      `--initial-cluster=test=http://127.0.0.1:${peer}`,
      '--log-level=warn',
    ]);
  }

  /** Starts the API server (again, after `stopApiServer`) and waits until /readyz says ok. */
  async startApiServer(): Promise<void> {
    if (this.apiserver) return;
    const d = (f: string) => join(this.dir, f);
    this.apiserver = this.spawn('kube-apiserver', join(KUBE_BIN, 'kube-apiserver'), [
      `--etcd-servers=http://127.0.0.1:${this.ports.etcd}`,
      '--bind-address=127.0.0.1',
      '--advertise-address=127.0.0.1',
      `--secure-port=${this.ports.api}`,
      '--insecure-port=0',
      `--cert-dir=${this.dir}`,
      `--client-ca-file=${d('ca.crt')}`,
      `--tls-cert-file=${d('server.crt')}`,
      `--tls-private-key-file=${d('server.key')}`,
      `--service-account-key-file=${d('sa.pub')}`,
      `--service-account-signing-key-file=${d('sa.key')}`,
      '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
      `--service-cluster-ip-range=${this.opts.serviceCIDR ?? '10.96.0.0/16'}`,
      '--authorization-mode=Node,RBAC',
      '--runtime-config=discovery.k8s.io/v1beta1=false',
      '--enable-priority-and-fairness=false',
      '--profiling=false',
      '--v=0',
    ]);
    await this.until(async () => (await this.get('/readyz')).status === 200, 90_000, 'kube-apiserver ready');
  }

  /**
   * Makes the API server reachable from inside a test network namespace at the same address
   * (127.0.0.1 and its port, so the same kubeconfig works there): a Unix socket listener here,
   * a forwarder there (no link or route in the root namespace). Returns the function that
   * stops both.
   */
  async reachableFrom(ns: Netns): Promise<() => Promise<void>> {
    const socket = join(this.dir, `fwd-${ns.name}.sock`);
    const server = createServer((c) => {
      const up = connect(this.ports.api, '127.0.0.1');
      c.pipe(up).pipe(c);
      const close = () => {
        c.destroy();
        up.destroy();
      };
      c.on('error', close);
      up.on('error', close);
    });
    await new Promise<void>((resolve) => server.listen(socket, resolve));
    const stopForwarder = await startForwarder(ns, this.ports.api, socket);
    return async () => {
      await stopForwarder();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    };
  }

  /** Kills the API server at once (an outage); etcd keeps the data. */
  async stopApiServer(): Promise<void> {
    const p = this.apiserver;
    this.apiserver = undefined;
    if (p) await this.kill(p);
  }

  /** Kills both and deletes their files. */
  async stop(): Promise<void> {
    await this.stopApiServer();
    if (this.etcd) await this.kill(this.etcd);
    this.etcd = undefined;
    for (const d of [this.dir, this.etcdDir]) {
      rmSync(d, { recursive: true, force: true });
      dirs.delete(d);
    }
  }

  /** GET with the admin identity: status and body (connection errors give status 0). */
  async get(path: string): Promise<{ status: number; body: string }> {
    try {
      return await this.request('GET', path);
    } catch (e) {
      return { status: 0, body: (e as Error).message };
    }
  }

  /**
   * One request with the admin identity, JSON in and out as is. (client-node's object API
   * serializes through its models, which drops fields it does not model, such as a
   * schema's `x-kubernetes-preserve-unknown-fields`.)
   */
  async request(method: string, path: string, body?: unknown): Promise<{ status: number; body: string }> {
    const opts: RequestOptions = {
      method,
      headers: {
        accept: 'application/json',
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
    };
    await this.kubeConfig().applyToHTTPSOptions(opts);
    return new Promise((resolve, reject) => {
      const req = httpsRequest(this.url + path, { ...opts, timeout: 10_000 }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new Error(`${method} ${path}: timed out`)));
      req.on('error', reject);
      req.end(body !== undefined ? JSON.stringify(body) : undefined);
    });
  }

  /** The collection path of an object's kind, found by discovery. */
  private async collection(obj: KubernetesObject): Promise<string> {
    const apiVersion = obj.apiVersion ?? 'v1';
    const base = apiVersion.includes('/') ? `/apis/${apiVersion}` : `/api/${apiVersion}`;
    const key = `${apiVersion}/${obj.kind}`;
    let found = this.resources.get(key);
    if (!found) {
      const { status, body } = await this.request('GET', base);
      if (status !== 200) throw new Error(`discovery of ${apiVersion}: ${status} ${body}`);
      const list = JSON.parse(body) as { resources: { name: string; kind: string; namespaced: boolean }[] };
      const r = list.resources.find((x) => x.kind === obj.kind && !x.name.includes('/'));
      if (!r) throw new Error(`${apiVersion} has no kind ${String(obj.kind)}`);
      found = { plural: r.name, namespaced: r.namespaced };
      this.resources.set(key, found);
    }
    const ns = found.namespaced ? `/namespaces/${obj.metadata?.namespace ?? 'default'}` : '';
    return `${base}${ns}/${found.plural}`;
  }

  /**
   * Creates the object, or replaces it if it exists; returns what the server stored. An
   * object read from the server (it has a resourceVersion) is replaced at once, with that
   * version as precondition.
   */
  async apply<T extends KubernetesObject>(obj: T): Promise<T> {
    const path = await this.collection(obj);
    if (obj.metadata?.resourceVersion) {
      const one = `${path}/${obj.metadata.name!}`;
      const replaced = await this.request('PUT', one, obj);
      if (replaced.status !== 200) throw new Error(`replace ${one}: ${replaced.status} ${replaced.body}`);
      return JSON.parse(replaced.body) as T;
    }
    const created = await this.request('POST', path, obj);
    if (created.status === 201 || created.status === 200) return JSON.parse(created.body) as T;
    if (created.status !== 409)
      throw new Error(`create ${String(obj.kind)}: ${created.status} ${created.body}`);
    const one = `${path}/${obj.metadata!.name!}`;
    const current = await this.request('GET', one);
    if (current.status !== 200) throw new Error(`get ${one}: ${current.status} ${current.body}`);
    const { metadata } = JSON.parse(current.body) as KubernetesObject;
    const replaced = await this.request('PUT', one, {
      ...obj,
      metadata: { ...obj.metadata, resourceVersion: metadata?.resourceVersion },
    });
    if (replaced.status !== 200) throw new Error(`replace ${one}: ${replaced.status} ${replaced.body}`);
    return JSON.parse(replaced.body) as T;
  }

  /** Deletes the object (gone already is fine). */
  async delete(obj: KubernetesObject): Promise<void> {
    const one = `${await this.collection(obj)}/${obj.metadata!.name!}`;
    const r = await this.request('DELETE', one);
    if (r.status !== 200 && r.status !== 202 && r.status !== 404)
      throw new Error(`delete ${one}: ${r.status} ${r.body}`);
  }

  private spawn(name: string, file: string, args: string[]): ChildProcess {
    const log = openSync(join(this.dir, `${name}.log`), 'a');
    const p = spawn(file, args, { stdio: ['ignore', log, log] });
    live.add(p);
    p.once('exit', () => live.delete(p));
    return p;
  }

  private async kill(p: ChildProcess): Promise<void> {
    if (p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise<void>((r) => p.once('exit', () => r()));
    p.kill('SIGKILL');
    await exited;
  }

  /** Waits until `check` passes (or a process exits). */
  async until(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (Date.now() < end) {
      if (this.etcd?.exitCode !== null && this.etcd?.exitCode !== undefined)
        throw new Error(`etcd exited (${this.etcd.exitCode}); see ${join(this.dir, 'etcd.log')}`);
      if (this.apiserver && this.apiserver.exitCode !== null)
        throw new Error(
          `kube-apiserver exited (${this.apiserver.exitCode}); see ${join(this.dir, 'kube-apiserver.log')}`,
        );
      if (await check()) return;
      await sleep(200);
    }
    throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; logs in ${this.dir}`);
  }
}
