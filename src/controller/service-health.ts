/**
 * The health check node ports of `externalTrafficPolicy: Local` services, as kube-proxy
 * serves them.
 *
 * Kubernetes gives such a LoadBalancer service a `spec.healthCheckNodePort`; every node
 * answers HTTP on it, 200 when the service has an endpoint on this node and 503 when not,
 * so the cloud load balancer sends traffic only to nodes that can take it without a hop.
 * A node whose proxy is unhealthy answers 503 too, as kube-proxy does since 1.28: its rules
 * may be stale, so it should not get new traffic even with local endpoints.
 */
import { createServer, type Server, type ServerResponse } from 'node:http';
import { closeServer, listening } from '../net/http.js';
import type { NetworkInterfaceInfo } from 'node:os';
import { cidrContains, formatHostPort, formatIP, parseIP } from '../net/ip.js';
import type { ProxyConfig } from '../proxy/config.js';
import { silentLogger, type Logger } from '../telemetry/log.js';

/** What a service needs served: its health check node port and its endpoints on this node. */
export interface ServiceHealthState {
  /** `spec.healthCheckNodePort`. */
  port: number;
  /** Ready endpoints of the service on this node. */
  localEndpoints: number;
}

/** A service whose health check could not be served; retried on the next update. */
export interface ServiceHealthProblem {
  /** `namespace/name`. */
  service: string;
  port: number;
  message: string;
}

/** Options of {@link ServiceHealthServer}. */
export interface ServiceHealthOptions {
  /**
   * The addresses to listen on, asked at every update (addresses come and go): one listener
   * each, as kube-proxy binds the node's addresses within nodePortAddresses (none: nothing is
   * listened on). Undefined (the default) means every address, IPv4 and IPv6, as when no
   * nodePortAddresses are set. `[::1]` and `::1` are both accepted.
   */
  hosts?: () => readonly string[] | undefined;
  /** Whether the proxy itself is healthy (its /healthz verdict); asked on every request. */
  proxyHealthy: () => boolean;
  log?: Logger;
}

/** One open health check: its listener and what it answers. */
interface Instance {
  namespace: string;
  name: string;
  port: number;
  /** Updated in place, so a count change needs no new socket. */
  localEndpoints: number;
  /** The addresses listened on, joined by spaces ('*' for every address, '' for none). */
  hosts: string;
  /** One per address. */
  servers: Server[];
}

/**
 * One HTTP listener per service health check node port, opened and closed as services come,
 * change port and go. Any path and method gets the verdict for that port's service.
 *
 * A port that cannot be bound is reported and left out, so the next update retries it; it
 * never affects the other services' listeners.
 */
export class ServiceHealthServer {
  private readonly hosts: () => readonly string[] | undefined;
  private readonly proxyHealthy: () => boolean;
  private readonly log: Logger;
  /** Open health checks by `namespace/name`. */
  private readonly open = new Map<string, Instance>();
  /** Updates and close run one at a time, in call order. */
  private tail: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(options: ServiceHealthOptions) {
    this.hosts = options.hosts ?? (() => undefined);
    this.proxyHealthy = options.proxyHealthy;
    this.log = options.log ?? silentLogger;
  }

  /**
   * Makes the listeners match `services` (keyed by `namespace/name`): opens the new ones,
   * moves those whose port changed, closes those gone, and takes the new endpoint counts
   * without touching the sockets. Resolves with the services it could not serve (a port in
   * use or not permitted, an invalid entry); those are retried on the next update.
   *
   * After {@link close}, does nothing: a sync racing shutdown must not reopen ports.
   */
  update(services: ReadonlyMap<string, ServiceHealthState>): Promise<ServiceHealthProblem[]> {
    // Copied now: the caller may change its map while an earlier update still runs.
    const wanted = new Map([...services].map(([k, v]) => [k, { ...v }]));
    return this.serialize(() => this.sync(wanted));
  }

  /** Closes every listener; later updates do nothing. */
  close(): Promise<void> {
    this.closed = true;
    return this.serialize(async () => {
      const all = [...this.open.values()];
      this.open.clear();
      await Promise.all(all.flatMap((i) => i.servers.map(closeServer)));
    });
  }

  /** A throwing callback must not crash the process from a request handler: unhealthy. */
  private isProxyHealthy(): boolean {
    try {
      return this.proxyHealthy();
    } catch (err) {
      this.log.error('proxy health callback failed', { error: err });
      return false;
    }
  }

  private serialize<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn);
    this.tail = run.catch(() => undefined);
    return run;
  }

  private async sync(wanted: Map<string, ServiceHealthState>): Promise<ServiceHealthProblem[]> {
    if (this.closed) return [];
    const given = this.hosts();
    // '*': every address; otherwise the addresses, space-separated ('' for none).
    const hosts = given ? [...new Set(given.map((h) => h.replace(/^\[|\]$/g, '')))].sort().join(' ') : '*';
    const problems: ServiceHealthProblem[] = [];
    const valid = new Map<string, ServiceHealthState & { namespace: string; name: string }>();
    for (const [service, state] of wanted) {
      const message = invalid(service, state);
      if (message) problems.push({ service, port: state.port, message });
      else valid.set(service, { ...state, ...splitKey(service) });
    }

    // Close first, so a port given up by one service can be taken by another in this update.
    const closing: Promise<void>[] = [];
    for (const [service, inst] of this.open) {
      const want = valid.get(service);
      if (want?.port === inst.port && inst.hosts === hosts) {
        inst.localEndpoints = want.localEndpoints;
        continue;
      }
      this.open.delete(service);
      this.log.info('closing service health check', { service, port: inst.port });
      closing.push(...inst.servers.map(closeServer));
    }
    await Promise.all(closing);

    const portOwner = new Map([...this.open].map(([service, inst]) => [inst.port, service]));
    // Problems in map order, whatever order the listens finish in.
    const opening: Promise<ServiceHealthProblem | undefined>[] = [];
    for (const [service, want] of valid) {
      if (this.open.has(service)) continue;
      const owner = portOwner.get(want.port);
      if (owner !== undefined) {
        problems.push({
          service,
          port: want.port,
          message: `Health check node port ${want.port} of service ${service} is already served for service ${owner}`,
        });
        continue;
      }
      portOwner.set(want.port, service);
      opening.push(
        this.start(service, want, hosts).then(
          () => undefined,
          (err: unknown) => ({
            service,
            port: want.port,
            message: `Cannot serve the health check of service ${service} on port ${want.port}: ${errorMessage(err)}`,
          }),
        ),
      );
    }
    for (const p of await Promise.all(opening)) if (p) problems.push(p);
    for (const p of problems) this.log.error('cannot serve service health check', { ...p });
    return problems;
  }

  private async start(
    service: string,
    want: ServiceHealthState & { namespace: string; name: string },
    hosts: string,
  ): Promise<void> {
    const inst: Instance = { ...want, hosts, servers: [] };
    const answer = (res: ServerResponse) => {
      const healthy = this.isProxyHealthy();
      const body = {
        service: { namespace: inst.namespace, name: inst.name },
        localEndpoints: inst.localEndpoints,
        serviceProxyHealthy: healthy,
      };
      res
        .writeHead(inst.localEndpoints > 0 && healthy ? 200 : 503, {
          'content-type': 'application/json',
          'x-content-type-options': 'nosniff',
          // Load balancers that weigh nodes (GCE's WEIGHTED_MAGLEV) read it.
          'x-load-balancing-endpoint-weight': String(inst.localEndpoints),
        })
        .end(JSON.stringify(body) + '\n');
    };
    try {
      for (const host of hosts === '*' ? [''] : hosts.split(' ').filter(Boolean)) {
        const server = createServer((_req, res) => answer(res));
        inst.servers.push(server);
        await listening(server, want.port, host || undefined).catch((err: unknown) => {
          throw new Error(
            `${host ? formatHostPort(host, want.port) : `port ${want.port}`}: ${errorMessage(err)}`,
          );
        });
        server.on('error', (err) =>
          this.log.error('service health check failed', { service, port: want.port, error: err }),
        );
      }
    } catch (err) {
      // All addresses or none: a half-served check would answer some load balancer probes.
      await Promise.all(inst.servers.filter((srv) => srv.listening).map(closeServer));
      throw err;
    }
    // close() may have been called while this listen was pending; it ran after us, but be sure.
    if (this.closed) {
      await Promise.all(inst.servers.map(closeServer));
      return;
    }
    this.open.set(service, inst);
    this.log.info('serving service health check', { service, port: want.port, hosts: hosts || 'none' });
  }
}

/** Why an entry cannot be served, or undefined when it can. */
function invalid(service: string, state: ServiceHealthState): string | undefined {
  const { port, localEndpoints } = state;
  if (!/^[^/]+\/[^/]+$/.test(service)) return `Not a namespace/name service key: ${JSON.stringify(service)}`;
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    return `Not a valid health check node port: ${JSON.stringify(port)} in service ${service}`;
  }
  if (!Number.isInteger(localEndpoints) || localEndpoints < 0) {
    return `Not a valid local endpoint count: ${JSON.stringify(localEndpoints)} in service ${service}`;
  }
  return undefined;
}

function splitKey(service: string): { namespace: string; name: string } {
  const i = service.indexOf('/');
  return { namespace: service.slice(0, i), name: service.slice(i + 1) };
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Where health check node ports listen, as kube-proxy: every address when nodePortAddresses
 * is not set; otherwise this node's addresses inside those CIDRs (and its node IPs for
 * `primary`). `interfaces` is os.networkInterfaces() of the node.
 */
export function healthCheckHosts(
  config: Pick<ProxyConfig, 'nodePortCIDRs' | 'nodePortPrimary'>,
  nodeIPs: readonly string[],
  interfaces: NodeJS.Dict<NetworkInterfaceInfo[]>,
): string[] | undefined {
  if (!config.nodePortCIDRs.length && !config.nodePortPrimary) return undefined;
  const out = new Set<string>(config.nodePortPrimary ? nodeIPs : []);
  for (const list of Object.values(interfaces)) {
    for (const a of list ?? []) {
      const ip = parseIP(a.address);
      if (ip && config.nodePortCIDRs.some((c) => cidrContains(c, ip))) out.add(formatIP(ip));
    }
  }
  return [...out].sort();
}
