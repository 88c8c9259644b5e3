/**
 * The deployable manifests and the image, checked without a cluster: config/ built as the
 * kustomize base (test/support/kustomize.ts), every YAML file under config/, crds/ and kind/,
 * and the Dockerfile. The checks are functions returning problems, run on the real files and
 * on broken copies, each of which must be reported.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { tmpdir } from 'node:os';
import { basename, dirname, join, posix, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import { parse, parseAllDocuments } from 'yaml';
import { healthRoutes } from '../../src/controller/health.js';
import { RouteServer } from '../../src/net/http.js';
import {
  readSettingsFile,
  resolveSettings,
  type Settings,
  type SettingsInput,
} from '../../src/controller/settings.js';
import { ConfigError } from '../../src/proxy/config.js';
import { structuralProblems, type Schema } from '../support/crd-validator.js';
import { requireTool } from '../support/tools.js';
import { KustomizeError, kustomizeBuild, type KObject, objectKey } from '../support/kustomize.js';
import { CLUSTER as KIND_CLUSTER } from '../../e2e/kind/cluster.js';

const repo = (p: string) => fileURLToPath(new URL(`../../${p}`, import.meta.url));
const VERSION = (JSON.parse(readFileSync(repo('package.json'), 'utf8')) as { version: string }).version;

const NAMESPACE = 'nftproxy-system';
/** What the memory benchmark measured (npm run bench), MiB. */
const MEASURED = JSON.parse(readFileSync(repo('bench/results/memory.json'), 'utf8')) as {
  services: number;
  peakMB: number;
};
/** A Kubernetes memory quantity in MiB (Mi, Gi, M, G, or bytes); undefined if not one. */
function mebibytes(q: string | undefined): number | undefined {
  const m = q === undefined ? null : /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|K|M|G)?$/.exec(q);
  if (!m) return undefined;
  const unit: Record<string, number> = {
    Ki: 1 / 1024,
    Mi: 1,
    Gi: 1024,
    K: 1e3 / 2 ** 20,
    M: 1e6 / 2 ** 20,
    G: 1e9 / 2 ** 20,
  };
  return Number(m[1]) * (m[2] ? unit[m[2]]! : 1 / 2 ** 20);
}
const IMAGE = `ghcr.io/nftproxy/nftproxy:${VERSION}`;
const UID = 65532;
const KINDS = [
  'ClusterRole',
  'ClusterRoleBinding',
  'ConfigMap',
  'CustomResourceDefinition',
  'DaemonSet',
  'Namespace',
  'ServiceAccount',
];
/**
 * `group/resource verb`, all and only what nftproxy calls: src/k8s/api-source.ts lists and
 * watches Services, EndpointSlices, Nodes, ServiceCIDRs and ProxyPolicies; src/controller/policy-status.ts
 * GETs and merge-patches the ProxyPolicy status subresource and creates core v1 Events.
 */
const GRANTS = [
  ...['services', 'nodes'].flatMap((r) => ['get', 'list', 'watch'].map((v) => `/${r} ${v}`)),
  ...['get', 'list', 'watch'].map((v) => `discovery.k8s.io/endpointslices ${v}`),
  ...['get', 'list', 'watch'].map((v) => `networking.k8s.io/servicecidrs ${v}`),
  ...['get', 'list', 'watch'].map((v) => `nftproxy.dev/proxypolicies ${v}`),
  'nftproxy.dev/proxypolicies/status get',
  'nftproxy.dev/proxypolicies/status patch',
  '/events create',
].sort();

// ---------------------------------------------------------------------------------------------
// The objects' fields the checks read

interface Port {
  name?: string;
  containerPort: number;
}
interface Probe {
  httpGet?: { path?: string; port?: number | string };
}
interface Container {
  name: string;
  image?: string;
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  args?: string[];
  env?: { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath?: string } } }[];
  ports?: Port[];
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  securityContext?: {
    runAsNonRoot?: boolean;
    runAsUser?: number;
    runAsGroup?: number;
    readOnlyRootFilesystem?: boolean;
    allowPrivilegeEscalation?: boolean;
    capabilities?: { add?: string[]; drop?: string[] };
  };
  volumeMounts?: { name: string; mountPath: string; subPath?: string }[];
}
interface PodSpec {
  hostNetwork?: boolean;
  dnsPolicy?: string;
  serviceAccountName?: string;
  priorityClassName?: string;
  tolerations?: unknown[];
  containers: Container[];
  volumes?: { name: string; configMap?: { name: string; items?: { key: string; path: string }[] } }[];
}
interface DaemonSet extends KObject {
  spec: {
    selector: { matchLabels?: Record<string, string> };
    updateStrategy?: { type?: string; rollingUpdate?: { maxUnavailable?: number | string } };
    template: { metadata?: { labels?: Record<string, string> }; spec: PodSpec };
  };
}
interface Rule {
  apiGroups?: string[];
  resources?: string[];
  verbs?: string[];
  resourceNames?: string[];
  nonResourceURLs?: string[];
}
interface ClusterRoleBinding extends KObject {
  roleRef: { apiGroup: string; kind: string; name: string };
  subjects?: { kind: string; name: string; namespace?: string }[];
}
interface CRD extends KObject {
  spec: { group: string; names: { plural: string }; versions: { schema: { openAPIV3Schema: Schema } }[] };
}

// ---------------------------------------------------------------------------------------------
// Checks of the built base

const portOf = (bind: string) => Number(bind.slice(bind.lastIndexOf(':') + 1));

function httpStatus(port: number, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    }).on('error', reject);
  });
}

/** The status the real health server gives `path` before the first sync. */
async function servedStatus(path: string): Promise<number> {
  const server = new RouteServer(healthRoutes({ lastSuccessAt: undefined, pendingSince: undefined }, 60_000));
  const port = await server.listen('127.0.0.1:0', 'healthz');
  try {
    return await httpStatus(port, path);
  } finally {
    await server.close();
  }
}

/** The settings `nftproxy run --config FILE FLAGS` makes of a config file's text. */
async function settingsOf(text: string, flags: SettingsInput = {}): Promise<Settings> {
  const dir = mkdtempSync(join(tmpdir(), 'nftproxy-manifests-'));
  try {
    writeFileSync(join(dir, 'config.yaml'), text);
    return resolveSettings(flags, await readSettingsFile(join(dir, 'config.yaml')), { NODE_NAME: 'node1' });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Everything wrong with the objects `kustomize build config/` made; empty when all is right. */
async function manifestProblems(objects: KObject[]): Promise<string[]> {
  const problems: string[] = [];
  const kinds = objects.map((o) => o.kind).sort();
  if (!isDeepStrictEqual(kinds, KINDS))
    problems.push(`kinds: want ${KINDS.join(', ')}; got ${kinds.join(', ')}`);
  const one = <T extends KObject>(kind: string): T | undefined => {
    const all = objects.filter((o) => o.kind === kind);
    return all.length === 1 ? (all[0] as T) : undefined;
  };

  // Namespace: every namespaced object in it, and it admits a hostNetwork pod.
  const ns = one('Namespace');
  if (ns?.metadata.name !== NAMESPACE) problems.push(`namespace: want a Namespace ${NAMESPACE}`);
  if (ns?.metadata.labels?.['pod-security.kubernetes.io/enforce'] !== 'privileged')
    problems.push(
      'namespace: pod-security.kubernetes.io/enforce must be privileged (hostNetwork, NET_ADMIN)',
    );
  for (const o of objects)
    if (['ServiceAccount', 'ConfigMap', 'DaemonSet'].includes(o.kind) && o.metadata.namespace !== NAMESPACE)
      problems.push(
        `namespace: ${o.kind} ${o.metadata.name} is in ${o.metadata.namespace}, not ${NAMESPACE}`,
      );

  // The CRD is structural.
  const crd = one<CRD>('CustomResourceDefinition');
  if (crd) {
    if (crd.metadata.name !== `${crd.spec.names.plural}.${crd.spec.group}`)
      problems.push(`crd: name ${crd.metadata.name} is not plural.group`);
    for (const v of crd.spec.versions)
      problems.push(...structuralProblems(v.schema.openAPIV3Schema).map((p) => `crd: not structural: ${p}`));
  }

  // RBAC: the DaemonSet's service account is bound to exactly the calls nftproxy makes.
  const sa = one('ServiceAccount');
  const role = one<KObject & { rules?: Rule[] }>('ClusterRole');
  const binding = one<ClusterRoleBinding>('ClusterRoleBinding');
  if (binding && role) {
    const ref = binding.roleRef;
    if (
      ref.apiGroup !== 'rbac.authorization.k8s.io' ||
      ref.kind !== 'ClusterRole' ||
      ref.name !== role.metadata.name
    )
      problems.push(
        `rbac: the binding's roleRef ${JSON.stringify(ref)} is not ClusterRole ${role.metadata.name}`,
      );
  }
  if (binding && sa) {
    const want = [{ kind: 'ServiceAccount', name: sa.metadata.name, namespace: sa.metadata.namespace }];
    if (!isDeepStrictEqual(binding.subjects, want))
      problems.push(
        `rbac: the binding's subjects ${JSON.stringify(binding.subjects)}, want ${JSON.stringify(want)}`,
      );
  }
  if (role) {
    const grants = new Set<string>();
    for (const r of role.rules ?? []) {
      if (r.resourceNames || r.nonResourceURLs)
        problems.push('rbac: resourceNames or nonResourceURLs in a rule');
      for (const g of r.apiGroups ?? [])
        for (const res of r.resources ?? []) for (const v of r.verbs ?? []) grants.add(`${g}/${res} ${v}`);
    }
    const extra = [...grants].filter((g) => !GRANTS.includes(g));
    const missing = GRANTS.filter((g) => !grants.has(g));
    if (extra.length) problems.push(`rbac: grants more than nftproxy calls: ${extra.join(', ')}`);
    if (missing.length) problems.push(`rbac: grants less than nftproxy calls: ${missing.join(', ')}`);
  }

  const ds = one<DaemonSet>('DaemonSet');
  if (!ds) return problems;
  const pod = ds.spec.template.spec;
  const labels = ds.spec.template.metadata?.labels ?? {};
  if (ds.metadata.name !== 'nftproxy') problems.push('daemonset: not named nftproxy');
  for (const [k, v] of Object.entries(ds.spec.selector.matchLabels ?? {}))
    if (labels[k] !== v) problems.push(`daemonset: the selector's ${k}=${v} is not on the pod`);
  if (labels['app.kubernetes.io/name'] !== 'nftproxy')
    problems.push('daemonset: pod label app.kubernetes.io/name');
  if (sa && (pod.serviceAccountName !== sa.metadata.name || ds.metadata.namespace !== sa.metadata.namespace))
    problems.push(`daemonset: serviceAccountName ${pod.serviceAccountName} is not the ServiceAccount built`);
  // Cluster DNS is a ClusterIP, which works only once nftproxy runs: the node's resolver.
  if (pod.hostNetwork !== true || pod.dnsPolicy !== 'Default')
    problems.push('daemonset: wants hostNetwork and dnsPolicy Default');
  if (pod.priorityClassName !== 'system-node-critical') problems.push('daemonset: priorityClassName');
  if (!isDeepStrictEqual(pod.tolerations, [{ operator: 'Exists' }]))
    problems.push('daemonset: must tolerate every taint');
  const strategy = ds.spec.updateStrategy;
  if (strategy?.type !== 'RollingUpdate' || strategy.rollingUpdate?.maxUnavailable !== 1)
    problems.push('daemonset: updateStrategy RollingUpdate, maxUnavailable 1');
  if (pod.containers.length !== 1) return [...problems, 'daemonset: want one container'];
  const c = pod.containers[0]!;
  if (c.image !== IMAGE) problems.push(`daemonset: image ${c.image}, want ${IMAGE}`);
  const nodeName = c.env?.find((e) => e.name === 'NODE_NAME');
  if (nodeName?.valueFrom?.fieldRef?.fieldPath !== 'spec.nodeName')
    problems.push('daemonset: NODE_NAME must come from spec.nodeName');

  // Memory: the limit covers the peak the memory benchmark measured (bench/results/memory.json,
  // the documented scale), with a fifth to spare; the request covers an idle operator.
  const limit = mebibytes(c.resources?.limits?.memory);
  const request = mebibytes(c.resources?.requests?.memory);
  if (limit === undefined || limit < Math.ceil(MEASURED.peakMB * 1.2))
    problems.push(
      `resources: memory limit ${c.resources?.limits?.memory} does not cover the measured peak of ${MEASURED.peakMB} MiB at ${MEASURED.services} services with a fifth to spare`,
    );
  if (request === undefined || request > (limit ?? 0))
    problems.push(
      `resources: memory request ${c.resources?.requests?.memory} must be set, at most the limit`,
    );

  // Security: uid 65532, only NET_ADMIN, no_new_privs off (file capabilities; see Dockerfile).
  const sc = c.securityContext ?? {};
  if (sc.runAsNonRoot !== true || sc.runAsUser !== UID || sc.runAsGroup !== UID)
    problems.push(`security: runAsNonRoot, runAsUser and runAsGroup ${UID}`);
  if (sc.readOnlyRootFilesystem !== true) problems.push('security: readOnlyRootFilesystem');
  if (sc.allowPrivilegeEscalation !== true)
    problems.push(
      'security: allowPrivilegeEscalation must be true: no_new_privs disables the file capabilities of nft',
    );
  if (!isDeepStrictEqual(sc.capabilities, { drop: ['ALL'], add: ['NET_ADMIN'] }))
    problems.push(`security: capabilities ${JSON.stringify(sc.capabilities)}, want drop ALL, add NET_ADMIN`);

  // --config FILE is the generated ConfigMap's config.yaml, as mounted.
  const cm = one<KObject & { data?: Record<string, string> }>('ConfigMap');
  const args = c.args ?? [];
  const configPath = args[0] === 'run' && args[1] === '--config' ? args[2] : undefined;
  // Flags an overlay may add (they override the file): the bind addresses.
  const FLAGS = {
    '--healthz-bind-address': 'healthzBindAddress',
    '--metrics-bind-address': 'metricsBindAddress',
  };
  const flags: SettingsInput = {};
  const extra = args.slice(3).filter((a) => {
    const [flag, value] = a.split(/=(.*)/s) as [string, string | undefined];
    if (!Object.hasOwn(FLAGS, flag) || value === undefined) return true;
    flags[FLAGS[flag as keyof typeof FLAGS] as 'healthzBindAddress'] = value;
    return false;
  });
  let configText: string | undefined;
  if (!configPath || extra.length)
    problems.push(
      `daemonset: args ${JSON.stringify(args)}, want run --config FILE [--healthz-bind-address=A] [--metrics-bind-address=A]`,
    );
  else {
    const mount = c.volumeMounts?.find(
      (m) => !m.subPath && posix.dirname(configPath) === posix.normalize(m.mountPath),
    );
    const volume = pod.volumes?.find((v) => v.name === mount?.name);
    if (!mount || !volume?.configMap)
      problems.push(`daemonset: no ConfigMap volume is mounted where ${configPath} is`);
    else if (volume.configMap.name !== cm?.metadata.name)
      problems.push(`daemonset: the volume's ConfigMap ${volume.configMap.name} is not the one generated`);
    else {
      const file = posix.basename(configPath);
      const key = volume.configMap.items ? volume.configMap.items.find((i) => i.path === file)?.key : file;
      configText = key === undefined ? undefined : cm.data?.[key];
      if (configText === undefined) problems.push(`daemonset: ConfigMap ${cm.metadata.name} has no ${file}`);
    }
  }
  let settings: Settings | undefined;
  if (configText !== undefined) {
    try {
      settings = await settingsOf(configText, flags);
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      problems.push(...e.problems.map((p) => `config.yaml: ${p}`));
    }
  }

  // Ports and probes match what that config binds, on paths the health server serves.
  const ports = new Map((c.ports ?? []).map((p) => [p.name, p.containerPort]));
  if (settings) {
    const healthz = portOf(settings.healthzBindAddress);
    if (ports.get('healthz') !== healthz)
      problems.push(`ports: healthz containerPort ${ports.get('healthz')}, config binds ${healthz}`);
    const metrics = settings.metricsBindAddress;
    if (ports.get('metrics') !== portOf(metrics))
      problems.push(`ports: metrics containerPort ${ports.get('metrics')}, config binds ${portOf(metrics)}`);
    if (/^(127\.|\[::1\]|localhost)/.test(metrics))
      problems.push(
        `ports: a metrics port is declared, but config binds ${metrics}, unreachable from outside the node`,
      );
    for (const [what, probe] of [
      ['liveness', c.livenessProbe],
      ['readiness', c.readinessProbe],
    ] as const) {
      const action = probe?.httpGet;
      if (!action?.path) {
        problems.push(`probes: ${what} wants an httpGet path`);
        continue;
      }
      const port = typeof action.port === 'string' ? ports.get(action.port) : action.port;
      if (port !== healthz) problems.push(`probes: ${what} port ${action.port} is not healthz ${healthz}`);
      const status = await servedStatus(action.path);
      if (what === 'liveness' && status !== 200)
        problems.push(
          `probes: liveness ${action.path} answers ${status} before the first sync; the pod would be restarted`,
        );
      if (status !== 200 && status !== 503) problems.push(`probes: ${what} ${action.path} answers ${status}`);
    }
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------
// Checks of the Dockerfile (a light parse: instructions per stage)

interface Instruction {
  op: string;
  args: string;
}

function dockerStages(text: string): { from: string; name?: string; body: Instruction[] }[] {
  const lines = text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  const args = new Map<string, string>();
  const stages: { from: string; name?: string; body: Instruction[] }[] = [];
  for (const line of lines) {
    const [, op = '', rest = ''] = /^(\S+)\s*(.*)$/.exec(line) ?? [];
    const ins = { op: op.toUpperCase(), args: rest.replace(/\s+/g, ' ') };
    if (ins.op === 'ARG' && !stages.length) {
      const [k, v = ''] = ins.args.split('=');
      args.set(k!, v);
    } else if (ins.op === 'FROM') {
      const [image = '', as, name] = ins.args.split(' ');
      const from = image.replace(/\$\{?(\w+)\}?/g, (_, k: string) => args.get(k) ?? '');
      stages.push({ from, ...(as?.toUpperCase() === 'AS' ? { name } : {}), body: [] });
    } else stages.at(-1)?.body.push(ins);
  }
  return stages;
}

function dockerfileProblems(text: string): string[] {
  const problems: string[] = [];
  const stages = dockerStages(text);
  if (stages.length < 2) return ['dockerfile: want a build stage and a runtime stage'];
  const build = stages[0]!;
  const runtime = stages.at(-1)!;
  for (const s of stages)
    if (s.from !== 'node:22-bookworm-slim')
      problems.push(`dockerfile: stage from ${s.from}, want node:22-bookworm-slim`);
  const runs = (s: typeof build) => s.body.filter((i) => i.op === 'RUN').map((i) => i.args);
  if (!runs(build).some((r) => /\bnpm ci\b/.test(r)) || !runs(build).some((r) => /\bnpm run build\b/.test(r)))
    problems.push('dockerfile: the build stage must npm ci and npm run build');

  const install = runs(runtime).find((r) => /apt-get install/.test(r)) ?? '';
  for (const pkg of ['nftables', 'conntrack', 'netbase', 'iproute2'])
    if (!new RegExp(`apt-get install[^&;]*\\s${pkg}(\\s|$)`).test(install))
      problems.push(`dockerfile: the runtime stage does not install ${pkg}`);
  for (const tool of ['/usr/sbin/nft', '/usr/sbin/conntrack'])
    if (!runs(runtime).some((r) => new RegExp(`setcap cap_net_admin\\+ep ${tool}(\\s|$)`).test(r)))
      problems.push(`dockerfile: no setcap cap_net_admin+ep on ${tool}`);
  const npm = runs(runtime).filter((r) => /\bnpm (ci|install|i)\b/.test(r));
  if (!npm.length || npm.some((r) => !/\bnpm ci\b[^&;]*--omit=dev/.test(r) || /\bnpm (install|i)\b/.test(r)))
    problems.push('dockerfile: the runtime stage must install with npm ci --omit=dev only');

  const copies = runtime.body.filter((i) => i.op === 'COPY' || i.op === 'ADD');
  for (const c of copies) {
    const words = c.args.split(' ').filter((w) => !w.startsWith('--'));
    const sources = words.slice(0, -1);
    const from = /--from=(\S+)/.exec(c.args)?.[1];
    if (from && !sources.every((s) => /^\/src\/dist\/?$/.test(s)))
      problems.push(
        `dockerfile: copies ${sources.join(' ')} from ${from}; only dist/ should come from the build`,
      );
    if (!from && sources.some((s) => /^(\.\/?|src\/?|\.\/src\/?|node_modules\/?|\*)$/.test(s)))
      problems.push(
        `dockerfile: the runtime stage copies ${sources.join(' ')} (sources or dev dependencies)`,
      );
  }
  const copied = copies.flatMap((c) =>
    c.args
      .split(' ')
      .filter((w) => !w.startsWith('--'))
      .slice(0, -1),
  );
  for (const want of ['package.json', 'package-lock.json', 'bin', 'crds', '/src/dist'])
    if (!copied.includes(want)) problems.push(`dockerfile: the runtime stage does not copy ${want}`);

  const workdir = runtime.body.filter((i) => i.op === 'WORKDIR').at(-1)?.args;
  if (workdir !== '/app')
    problems.push(`dockerfile: WORKDIR ${workdir}, want /app (bin/nftproxy.js is run from there)`);
  const user = runtime.body.filter((i) => i.op === 'USER').at(-1)?.args;
  if (user !== `${UID}:${UID}`) problems.push(`dockerfile: USER ${user}, want ${UID}:${UID} (non-root)`);
  const entry = runtime.body.filter((i) => i.op === 'ENTRYPOINT').at(-1)?.args;
  let entrypoint: unknown;
  try {
    entrypoint = entry === undefined ? undefined : JSON.parse(entry);
  } catch {
    entrypoint = entry;
  }
  if (!isDeepStrictEqual(entrypoint, ['node', '/app/bin/nftproxy.js']))
    problems.push(`dockerfile: ENTRYPOINT ${entry}, want ["node", "/app/bin/nftproxy.js"]`);
  return problems;
}

// ---------------------------------------------------------------------------------------------
// YAML files

function yamlFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .sort()
    .flatMap((f) => {
      const p = join(dir, f);
      if (statSync(p).isDirectory()) return yamlFiles(p);
      return /\.ya?ml$/.test(f) ? [p] : [];
    });
}

/** Files kustomizations use as generator sources or patches: YAML, but not objects. */
function referencedFiles(kustomizations: string[]): Set<string> {
  const out = new Set<string>();
  for (const k of kustomizations) {
    const doc = (parse(readFileSync(k, 'utf8')) ?? {}) as Record<string, unknown>;
    const add = (p: unknown) => typeof p === 'string' && out.add(join(dirname(k), p.replace(/^[^=]*=/, '')));
    for (const g of [doc.configMapGenerator, doc.secretGenerator].flat())
      for (const f of (g as { files?: unknown[] } | undefined)?.files ?? []) add(f);
    for (const p of [doc.patches, doc.patchesJson6902].flat())
      add((p as { path?: unknown } | undefined)?.path);
    for (const p of (doc.patchesStrategicMerge as unknown[] | undefined) ?? []) add(p);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

/** A broken copy of the base, and what must be reported about it. */
interface Mutation {
  name: string;
  change: (objects: KObject[]) => void;
  reported: RegExp;
}

const find = <T extends KObject>(objects: KObject[], kind: string) =>
  objects.find((o) => o.kind === kind) as T;
const container = (objects: KObject[]) =>
  find<DaemonSet>(objects, 'DaemonSet').spec.template.spec.containers[0]!;
const podOf = (objects: KObject[]) => find<DaemonSet>(objects, 'DaemonSet').spec.template.spec;
const rulesOf = (objects: KObject[]) => find<KObject & { rules: Rule[] }>(objects, 'ClusterRole').rules;
const configOf = (objects: KObject[]) =>
  find<KObject & { data: Record<string, string> }>(objects, 'ConfigMap').data;

const MUTATIONS: Mutation[] = [
  {
    name: 'a wrong service account name',
    change: (o) => void (podOf(o).serviceAccountName = 'nftproxy-controller'),
    reported: /serviceAccountName nftproxy-controller/,
  },
  {
    name: 'the binding in another namespace',
    change: (o) =>
      void (find<ClusterRoleBinding>(o, 'ClusterRoleBinding').subjects![0]!.namespace = 'kube-system'),
    reported: /rbac: the binding's subjects/,
  },
  {
    name: 'a binding to another role',
    change: (o) => void (find<ClusterRoleBinding>(o, 'ClusterRoleBinding').roleRef.name = 'admin'),
    reported: /roleRef/,
  },
  {
    name: 'an extra RBAC verb',
    change: (o) => rulesOf(o)[0]!.verbs!.push('delete'),
    reported: /grants more .*\/services delete/,
  },
  {
    name: 'Events patched too',
    change: (o) => rulesOf(o).at(-1)!.verbs!.push('patch'),
    reported: /grants more .*\/events patch/,
  },
  {
    name: 'no Events',
    change: (o) => void rulesOf(o).pop(),
    reported: /grants less .*\/events create/,
  },
  {
    name: 'a wildcard resource',
    change: (o) => void (rulesOf(o)[0]!.resources = ['*']),
    reported: /grants more .*\/\* get/,
  },
  {
    name: 'a wrong liveness port',
    change: (o) => void (container(o).livenessProbe!.httpGet!.port = 10257),
    reported: /liveness port 10257/,
  },
  {
    name: 'a healthz port other than the config binds',
    change: (o) => void (container(o).ports!.find((p) => p.name === 'healthz')!.containerPort = 10266),
    reported: /healthz containerPort 10266/,
  },
  {
    name: 'a liveness path the server does not serve',
    change: (o) => void (container(o).livenessProbe!.httpGet!.path = '/livezz'),
    reported: /liveness \/livezz answers 404/,
  },
  {
    name: 'a readiness path the server does not serve',
    change: (o) => void (container(o).readinessProbe!.httpGet!.path = '/health'),
    reported: /readiness \/health answers 404/,
  },
  {
    name: 'liveness on /healthz',
    change: (o) => void (container(o).livenessProbe!.httpGet!.path = '/healthz'),
    reported: /liveness \/healthz answers 503 before the first sync/,
  },
  {
    name: 'a metrics port other than the config binds',
    change: (o) => void (container(o).ports!.find((p) => p.name === 'metrics')!.containerPort = 9100),
    reported: /metrics containerPort 9100/,
  },
  {
    name: 'metrics on loopback',
    change: (o) => {
      const data = configOf(o);
      data['config.yaml'] = data['config.yaml']!.replace(
        /^metricsBindAddress: .*$/m,
        'metricsBindAddress: 127.0.0.1:10249',
      );
    },
    reported: /config binds 127.0.0.1:10249, unreachable from outside the node/,
  },
  {
    name: 'a config file nftproxy rejects',
    change: (o) => void (configOf(o)['config.yaml'] += '\nsyncPeriodd: 30s\n'),
    reported: /config.yaml: .*unknown setting "syncPeriodd"/,
  },
  {
    name: '--config where nothing is mounted',
    change: (o) => void (container(o).args = ['run', '--config', '/etc/nftproxy-config/config.yaml']),
    reported: /no ConfigMap volume is mounted where \/etc\/nftproxy-config\/config.yaml/,
  },
  {
    name: '--config naming a key the ConfigMap lacks',
    change: (o) => void (container(o).args = ['run', '--config', '/etc/nftproxy/nftproxy.yaml']),
    reported: /has no nftproxy.yaml/,
  },
  {
    name: 'a volume of another ConfigMap',
    change: (o) => void (podOf(o).volumes![0]!.configMap!.name = 'nftproxy-config-5g2h7'),
    reported: /ConfigMap nftproxy-config-5g2h7 is not the one generated/,
  },
  {
    name: 'allowPrivilegeEscalation false',
    change: (o) => void (container(o).securityContext!.allowPrivilegeEscalation = false),
    reported: /allowPrivilegeEscalation must be true/,
  },
  {
    name: 'NET_RAW added',
    change: (o) => container(o).securityContext!.capabilities!.add!.push('NET_RAW'),
    reported: /capabilities/,
  },
  {
    name: 'root',
    change: (o) => void (container(o).securityContext!.runAsUser = 0),
    reported: /runAsUser/,
  },
  {
    name: 'a memory limit below the measured peak',
    change: (o) => void (container(o).resources!.limits!.memory = '256Mi'),
    reported: /memory limit 256Mi does not cover the measured peak/,
  },
  {
    name: 'the DaemonSet in another namespace',
    change: (o) => void (find(o, 'DaemonSet').metadata.namespace = 'kube-system'),
    reported: /DaemonSet nftproxy is in kube-system/,
  },
  {
    name: 'a namespace that rejects hostNetwork',
    change: (o) =>
      void (find(o, 'Namespace').metadata.labels!['pod-security.kubernetes.io/enforce'] = 'baseline'),
    reported: /enforce must be privileged/,
  },
  {
    name: 'an image tag other than the version',
    change: (o) => void (container(o).image = 'ghcr.io/nftproxy/nftproxy:latest'),
    reported: /image ghcr.io\/nftproxy\/nftproxy:latest/,
  },
  {
    name: 'NODE_NAME not from the node',
    change: (o) => void (container(o).env = [{ name: 'NODE_NAME', value: 'node1' }]),
    reported: /NODE_NAME/,
  },
  {
    name: 'an extra object',
    change: (o) => o.push({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'nftproxy' } }),
    reported: /kinds: /,
  },
  {
    name: 'a CRD schema that is not structural',
    change: (o) => {
      const schema = find<CRD>(o, 'CustomResourceDefinition').spec.versions[0]!.schema.openAPIV3Schema;
      delete schema.properties!.spec!.type;
    },
    reported: /crd: not structural: spec: no type/,
  },
];

const DOCKER_MUTATIONS: { name: string; change: (text: string) => string; reported: RegExp }[] = [
  {
    name: 'no conntrack',
    change: (t) => t.replace(/ nftables conntrack netbase /, ' nftables netbase '),
    reported: /does not install conntrack/,
  },
  {
    name: 'no netbase',
    change: (t) => t.replace(/ conntrack netbase iproute2/, ' conntrack iproute2'),
    reported: /does not install netbase/,
  },
  {
    name: 'no iproute2',
    change: (t) => t.replace(/ netbase iproute2 /, ' netbase '),
    reported: /does not install iproute2/,
  },
  {
    name: 'no file capability on nft',
    change: (t) => t.replace(/setcap cap_net_admin\+ep \/usr\/sbin\/nft /, 'true '),
    reported: /no setcap cap_net_admin\+ep on \/usr\/sbin\/nft/,
  },
  {
    name: 'the sources copied',
    change: (t) => t.replace(/COPY bin \.\/bin/, 'COPY bin ./bin\nCOPY src ./src'),
    reported: /copies src/,
  },
  {
    name: 'everything copied',
    change: (t) => t.replace(/COPY bin \.\/bin/, 'COPY . .'),
    reported: /copies \./,
  },
  {
    name: 'dev dependencies installed',
    change: (t) => t.replace(/npm ci --omit=dev/, 'npm ci'),
    reported: /npm ci --omit=dev only/,
  },
  {
    name: 'node_modules from the build stage',
    change: (t) =>
      t.replace(
        /COPY --from=build \/src\/dist \.\/dist/,
        '$&\nCOPY --from=build /src/node_modules ./node_modules',
      ),
    reported: /copies \/src\/node_modules from build/,
  },
  {
    name: 'running as root',
    change: (t) => t.replace(/USER 65532:65532/, 'USER root'),
    reported: /USER root/,
  },
  {
    name: 'no USER',
    change: (t) => t.replace(/USER 65532:65532\n/, ''),
    reported: /USER undefined/,
  },
  {
    name: 'another entrypoint',
    change: (t) => t.replace(/"\/app\/bin\/nftproxy.js"/, '"/app/dist/cli/main.js"'),
    reported: /ENTRYPOINT/,
  },
  {
    name: 'another base image',
    change: (t) => t.replace(/node:22-bookworm-slim/, 'node:22-alpine'),
    reported: /node:22-alpine/,
  },
];

describe('manifests', () => {
  const built = kustomizeBuild(repo('config'));
  const copy = () => structuredClone(built);

  it('every YAML file under config/, crds/ and kind/ parses into objects with apiVersion, kind and name', () => {
    const files = ['config', 'crds', 'kind'].flatMap((d) => yamlFiles(repo(d)));
    const kustomizations = files.filter((f) => basename(f) === 'kustomization.yaml');
    const sources = referencedFiles(kustomizations);
    assert.ok(files.length > 10 && sources.has(repo('config/nftproxy-config.yaml')));
    for (const file of files) {
      const where = relative(repo('.'), file);
      for (const doc of parseAllDocuments(readFileSync(file, 'utf8'))) {
        assert.deepEqual(doc.errors, [], where);
        const o = doc.toJS() as Record<string, unknown> | null;
        if (o === null || sources.has(file)) continue;
        assert.ok(
          typeof o.apiVersion === 'string' && typeof o.kind === 'string',
          `${where}: apiVersion, kind`,
        );
        if (basename(file) === 'kustomization.yaml') {
          assert.match(
            `${o.apiVersion} ${o.kind}`,
            /^kustomize\.config\.k8s\.io\/\S+ (Kustomization|Component)$/,
            where,
          );
        } else if (!o.apiVersion.startsWith('kind.x-k8s.io/')) {
          // (kind's cluster configs have no metadata)
          const name = (o.metadata as { name?: unknown } | undefined)?.name;
          assert.ok(typeof name === 'string' && name !== '', `${where}: metadata.name`);
        }
      }
    }
  });

  it('kustomize build config/ yields the namespace, CRD, RBAC, ConfigMap and DaemonSet', () => {
    assert.deepEqual(built.map((o) => o.kind).sort(), KINDS);
    assert.equal(find(built, 'ConfigMap').metadata.name, 'nftproxy-config');
    assert.equal(
      configOf(built)['config.yaml'],
      readFileSync(repo('config/nftproxy-config.yaml'), 'utf8'),
      'config.yaml is the file',
    );
  });

  it('builds as kubectl kustomize (v1.30, kustomize v5) does', function () {
    const r = spawnSync(requireTool(this, 'kubectl'), ['kustomize', repo('config')], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const key = objectKey;
    const theirs = parseAllDocuments(r.stdout).map((d) => d.toJS() as KObject);
    const byKey = new Map(built.map((o) => [key(o), o]));
    assert.deepEqual(theirs.map(key).sort(), [...byKey.keys()].sort());
    for (const o of theirs) assert.deepEqual(byKey.get(key(o)), o, key(o));
  });

  it('kind/overlay patches what the base has, for the cluster kind/cluster.yaml creates', () => {
    const load = <T>(f: string) => parse(readFileSync(repo(f), 'utf8')) as T;
    const cluster = load<{ name: string; networking: { kubeProxyMode: string } }>('kind/cluster.yaml');
    assert.equal(cluster.name, KIND_CLUSTER, 'the e2e suite looks for this cluster');
    assert.equal(cluster.networking.kubeProxyMode, 'none');
    const k = load<{ resources: string[]; images: { name: string }[]; patches: { path: string }[] }>(
      'kind/overlay/kustomization.yaml',
    );
    assert.deepEqual(k.resources, ['../../config']);
    type Container = { name: string; image?: string; env?: { name: string; value: string }[] };
    type Ds = {
      kind: string;
      metadata: KObject['metadata'];
      spec: { template: { spec: { containers: Container[] } } };
    };
    const ds = find(built, 'DaemonSet') as unknown as Ds;
    const image = ds.spec.template.spec.containers[0]!.image!;
    assert.ok(
      k.images.some((i) => i.name === image.split(':')[0]),
      `the overlay renames the base image ${image}`,
    );
    const patch = load<Ds>(`kind/overlay/${k.patches[0]!.path}`);
    assert.equal(
      `${patch.kind}/${patch.metadata.namespace}/${patch.metadata.name}`,
      `DaemonSet/${ds.metadata.namespace}/${ds.metadata.name}`,
    );
    const container = patch.spec.template.spec.containers[0]!;
    assert.ok(
      ds.spec.template.spec.containers.some((c) => c.name === container.name),
      'the patched container exists',
    );
    const env = Object.fromEntries((container.env ?? []).map((e) => [e.name, e.value]));
    assert.equal(
      env.KUBERNETES_SERVICE_HOST,
      `${KIND_CLUSTER}-control-plane`,
      'kind names the API server node so',
    );
    assert.equal(env.KUBERNETES_SERVICE_PORT, '6443');
  });

  it('kind/overlay builds with kubectl kustomize', function () {
    const r = spawnSync(requireTool(this, 'kubectl'), ['kustomize', repo('kind/overlay')], {
      encoding: 'utf8',
    });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /image: nftproxy:e2e\n\s+imagePullPolicy: Never/);
    assert.match(r.stdout, /name: KUBERNETES_SERVICE_HOST\n\s+value: nftproxy-e2e-control-plane/);
  });

  it('passes every check: RBAC, service account, config file, ports, probes, security', async () => {
    assert.deepEqual(await manifestProblems(built), []);
  });

  it('alongside-kube-proxy: passes every check, on ports other than kube-proxy’s', async function () {
    const objects = kustomizeBuild(repo('overlays/alongside-kube-proxy'));
    // The real kustomize builds it the same (it refuses an overlay inside its own base).
    const r = spawnSync(requireTool(this, 'kubectl'), ['kustomize', repo('overlays/alongside-kube-proxy')], {
      encoding: 'utf8',
    });
    assert.equal(r.status, 0, r.stderr);
    const key = objectKey;
    const theirs = new Map(
      parseAllDocuments(r.stdout)
        .map((d) => d.toJS() as KObject)
        .map((o) => [key(o), o]),
    );
    for (const o of objects) assert.deepEqual(o, theirs.get(key(o)), key(o));
    assert.equal(theirs.size, objects.length);
    assert.deepEqual(await manifestProblems(objects), []);
    const ds = objects.find((o) => o.kind === 'DaemonSet') as unknown as {
      spec: { template: { spec: { containers: { ports: { name: string; containerPort: number }[] }[] } } };
    };
    const ports = ds.spec.template.spec.containers[0]!.ports.map((p) => p.containerPort);
    assert.deepEqual(ports, [10356, 10349]);
    for (const kubeProxy of [10256, 10249])
      assert.ok(!ports.includes(kubeProxy), `${kubeProxy} is kube-proxy's`);
    // Otherwise the base, object for object.
    assert.deepEqual(
      objects.map((o) => `${o.kind}/${o.metadata.name}`),
      built.map((o) => `${o.kind}/${o.metadata.name}`),
    );
  });

  describe('reports a broken base', () => {
    for (const m of MUTATIONS)
      it(m.name, async () => {
        const objects = copy();
        m.change(objects);
        const problems = await manifestProblems(objects);
        assert.ok(
          problems.some((p) => m.reported.test(p)),
          `want ${m.reported}, got:\n${problems.join('\n')}`,
        );
      });
  });

  it('builds only what it implements, and says so', () => {
    const dir = mkdtempSync(join(tmpdir(), 'nftproxy-kustomize-'));
    try {
      writeFileSync(join(dir, 'cm.yaml'), 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n');
      writeFileSync(join(dir, 'c.txt'), 'x');
      const k = 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n';
      const cases: [string, RegExp][] = [
        ['resources: [cm.yaml]\npatches: [{path: p.yaml}]', /a path is not implemented/],
        [
          'resources: [cm.yaml]\npatches: [{target: {kind: ConfigMap}, patch: "data: {a: b}"}]',
          /only JSON 6902 patches/,
        ],
        [
          'resources: [cm.yaml]\npatches: [{target: {kind: ConfigMap}, patch: "[{op: move, path: /data, from: /x}]"}]',
          /op move is not implemented/,
        ],
        [
          'resources: [cm.yaml]\npatches: [{target: {kind: ConfigMap}, patch: "[{op: replace, path: /data/x, value: 1}]"}]',
          /\/data\/x: data does not exist/,
        ],
        ['resources: [cm.yaml]\npatches: [{target: {kind: Secret}, patch: "[]"}]', /matches nothing/],
        ['resources: [cm.yaml]\nnamePrefix: x-', /field namePrefix/],
        ['configMapGenerator: [{name: c, files: [c.txt]}]', /name suffix hashes/],
        [
          'configMapGenerator: [{name: c, literals: [a=b], options: {disableNameSuffixHash: true}}]',
          /literals/,
        ],
        ['images: [{name: a, digest: "sha256:0"}]', /images.digest/],
        ['resources: [https://example.com/x.yaml]', /remote resources/],
        ['namespace: n\nresources: [other.yaml]', /does not exist/],
      ];
      for (const [body, error] of cases) {
        writeFileSync(join(dir, 'kustomization.yaml'), k + body + '\n');
        assert.throws(
          () => kustomizeBuild(dir),
          (e: Error) => e instanceof KustomizeError && error.test(e.message),
          body,
        );
      }
      writeFileSync(join(dir, 'kustomization.yaml'), `${k}namespace: n\nresources: [w.yaml]\n`);
      writeFileSync(join(dir, 'w.yaml'), 'apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n');
      assert.throws(() => kustomizeBuild(dir), /scope of kind Widget/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  describe('release workflow', () => {
    type Step = { id?: string; name?: string; uses?: string; run?: string; with?: Record<string, unknown> };
    const wf = parse(readFileSync(repo('.github/workflows/release.yaml'), 'utf8')) as {
      on: { push: { tags: string[] } };
      env: { IMAGE: string };
      permissions: Record<string, string>;
      jobs: { image: { steps: Step[] } };
    };
    const steps = wf.jobs.image.steps;
    const versionStep = steps.find((x) => x.id === 'version')!;
    const runVersionStep = (tag: string) => {
      const out = join(mkdtempSync(join(tmpdir(), 'nftproxy-release-')), 'out');
      writeFileSync(out, '');
      const r = spawnSync('bash', ['-c', versionStep.run!], {
        cwd: repo('.'),
        env: { ...process.env, GITHUB_REF_NAME: tag, GITHUB_OUTPUT: out },
        encoding: 'utf8',
      });
      const written = readFileSync(out, 'utf8');
      rmSync(dirname(out), { recursive: true, force: true });
      return { status: r.status, written, stdout: r.stdout };
    };

    it('runs on version tags and pushes, from the Dockerfile, the image the DaemonSet names', () => {
      assert.deepEqual(wf.on.push.tags, ['v*']);
      assert.equal(wf.permissions.packages, 'write');
      const ds = built.find((o) => o.kind === 'DaemonSet') as unknown as {
        spec: { template: { spec: { containers: { image: string }[] } } };
      };
      const image = ds.spec.template.spec.containers[0]!.image;
      const pkg = JSON.parse(readFileSync(repo('package.json'), 'utf8')) as { version: string };
      assert.equal(
        image,
        `${wf.env.IMAGE}:${pkg.version}`,
        'the manifests run the image a release of this version pushes',
      );
      const push = steps.find((x) => x.uses?.startsWith('docker/build-push-action'))!;
      assert.equal(push.with?.push, true);
      assert.equal(push.with?.context, '.');
      assert.equal(push.with?.tags, '${{ env.IMAGE }}:${{ steps.version.outputs.version }}');
      assert.ok(existsSync(repo('Dockerfile')));
      const chart = steps.find((x) => x.name === 'Chart')!;
      assert.match(chart.run!, /helm package charts\/nftproxy/);
      assert.match(
        chart.run!,
        /helm push .*nftproxy-\$\{\{ steps\.version\.outputs\.version \}\}\.tgz"? oci:\/\/ghcr\.io\/nftproxy\/charts/,
      );
    });

    it('refuses a tag that is not the version package.json and config/ name', () => {
      const pkg = JSON.parse(readFileSync(repo('package.json'), 'utf8')) as { version: string };
      const ok = runVersionStep(`v${pkg.version}`);
      assert.equal(ok.status, 0, ok.stdout);
      assert.equal(ok.written, `version=${pkg.version}\n`);
      const bad = runVersionStep('v99.0.0');
      assert.equal(bad.status, 1);
      assert.match(bad.stdout, /differ/);
    });
  });

  describe('Dockerfile', () => {
    const dockerfile = readFileSync(repo('Dockerfile'), 'utf8');

    it('builds in a stage of its own and runs dist/ as uid 65532 with nft and conntrack, without sources or dev dependencies', () => {
      assert.deepEqual(dockerfileProblems(dockerfile), []);
    });

    for (const m of DOCKER_MUTATIONS)
      it(`reports ${m.name}`, () => {
        const changed = m.change(dockerfile);
        assert.notEqual(changed, dockerfile, 'the mutation applies');
        const problems = dockerfileProblems(changed);
        assert.ok(
          problems.some((p) => m.reported.test(p)),
          `want ${m.reported}, got:\n${problems.join('\n')}`,
        );
      });

    it('keeps build context small: .dockerignore excludes node_modules, dist, coverage and .git', () => {
      const ignored = readFileSync(repo('.dockerignore'), 'utf8').split('\n');
      for (const p of ['node_modules', 'dist', 'coverage', '.git', 'tmp-scratch', 'bench/results/tmp'])
        assert.ok(ignored.includes(p), p);
    });
  });
});
