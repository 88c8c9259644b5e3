/**
 * kube-proxy's own config file (KubeProxyConfiguration, kubeproxy.config.k8s.io/v1alpha1) as
 * nftproxy settings, so a cluster's kube-proxy ConfigMap (kubeadm's `kube-proxy`, key
 * `config.conf`) can be given to `nftproxy run --config` as it is. Fields with an nftproxy
 * equivalent are mapped; every other field that is set is listed as ignored, with why, for
 * the log at start.
 */
import { parseDuration, type SettingsInput } from './settings.js';

/** The API version and kind that mark a KubeProxyConfiguration. */
export const KUBE_PROXY_CONFIG = {
  apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
  kind: 'KubeProxyConfiguration',
};

/** kube-proxy's conntrack defaults: what it set on the node when the file leaves them unset. */
const CONNTRACK_DEFAULTS = {
  maxPerCore: 32768,
  min: 131072,
  tcpEstablishedTimeout: '24h',
  tcpCloseWaitTimeout: '1h',
} as const;

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Whether a parsed YAML document is a KubeProxyConfiguration. */
export function isKubeProxyConfiguration(doc: unknown): doc is Obj {
  return isObj(doc) && doc.kind === KUBE_PROXY_CONFIG.kind && typeof doc.apiVersion === 'string';
}

/** Go's `1h0m0s` / `30s` as a duration setting; zero (`0s`), empty or unreadable: undefined. */
function goDuration(v: unknown): string | undefined {
  if (typeof v !== 'string') return undefined;
  // Unreadable text goes through, for the settings' check to name it.
  return parseDuration(v) === 0 ? undefined : v;
}

/** `0.0.0.0:10256`, or just an IP (kube-proxy then adds its default port). */
function bindAddress(v: unknown, defaultPort: number): string | undefined {
  if (typeof v !== 'string' || v === '') return undefined;
  if (/^\[.*\]:\d+$|^[^:]+:\d+$/.test(v)) return v;
  return v.includes(':') ? `[${v}]:${defaultPort}` : `${v}:${defaultPort}`;
}

/** The settings a KubeProxyConfiguration means, and the fields set in it that nftproxy does not use. */
export function fromKubeProxyConfiguration(doc: Obj): { settings: SettingsInput; ignored: string[] } {
  const settings: SettingsInput = {};
  const ignored: string[] = [];
  const ignore = (field: string, why: string) => ignored.push(`${field}: ${why}`);
  // kube-proxy (and kubeadm, which writes every field) leaves defaults as zero values.
  const set = (v: unknown): boolean =>
    !(
      v === undefined ||
      v === null ||
      v === false ||
      v === 0 ||
      (typeof v === 'string' && (v === '' || v === '0' || parseDuration(v) === 0)) ||
      (Array.isArray(v) && !v.length) ||
      (isObj(v) && !Object.values(v).some(set))
    );

  if (doc.apiVersion !== KUBE_PROXY_CONFIG.apiVersion)
    ignore('apiVersion', `read as ${KUBE_PROXY_CONFIG.apiVersion}, not ${JSON.stringify(doc.apiVersion)}`);
  const mode = typeof doc.mode === 'string' ? doc.mode : '';
  if (mode && mode !== 'nftables' && mode !== 'iptables')
    ignore('mode', `${mode}: nftproxy programs nftables; ProxyPolicy schedulers stand in for IPVS's`);
  // The mode's own section first, as kube-proxy reads it; iptables' settings otherwise.
  const sections = (mode === 'nftables' ? ['nftables', 'iptables'] : ['iptables', 'nftables']).map((k) =>
    isObj(doc[k]) ? (doc[k] as Obj) : {},
  );
  const first = (field: string) => sections.map((s) => s[field]).find((v) => set(v));

  for (const [field, value] of Object.entries(doc)) {
    if (!set(value)) continue;
    switch (field) {
      case 'apiVersion':
      case 'kind':
      case 'mode':
        break;
      case 'hostnameOverride':
        if (typeof value === 'string') settings.nodeName = value;
        break;
      case 'clusterCIDR':
        if (typeof value === 'string')
          settings.clusterCIDRs = value
            .split(',')
            .map((c) => c.trim())
            .filter(Boolean);
        break;
      case 'nodePortAddresses':
        if (Array.isArray(value)) settings.nodePortAddresses = value.map(String);
        break;
      case 'healthzBindAddress': {
        const bind = bindAddress(value, 10256);
        if (bind !== undefined) settings.healthzBindAddress = bind;
        break;
      }
      case 'metricsBindAddress': {
        const bind = bindAddress(value, 10249);
        if (bind !== undefined) settings.metricsBindAddress = bind;
        break;
      }
      case 'clientConnection': {
        const cc = isObj(value) ? value : {};
        if (typeof cc.kubeconfig === 'string' && cc.kubeconfig) settings.kubeconfig = cc.kubeconfig;
        for (const k of Object.keys(cc))
          if (k !== 'kubeconfig' && set(cc[k]))
            ignore(`clientConnection.${k}`, 'client-node defaults are used');
        break;
      }
      case 'iptables':
      case 'nftables': {
        const sec = isObj(value) ? value : {};
        for (const [k, v] of Object.entries(sec)) {
          if (!set(v) || ['masqueradeAll', 'syncPeriod', 'minSyncPeriod'].includes(k)) continue;
          if (k === 'masqueradeBit' && v === 14) continue;
          ignore(
            `${field}.${k}`,
            k === 'masqueradeBit'
              ? 'nftproxy marks with bit 14 (0x4000), as kube-proxy by default'
              : 'no nftproxy equivalent',
          );
        }
        break;
      }
      case 'conntrack':
        break; // below
      case 'detectLocalMode':
        if (typeof value === 'string') settings.detectLocalMode = value;
        break;
      case 'detectLocal': {
        const dl = isObj(value) ? value : {};
        if (Array.isArray(dl.clusterCIDRs) && dl.clusterCIDRs.length && !settings.clusterCIDRs)
          settings.clusterCIDRs = dl.clusterCIDRs.map(String);
        if (typeof dl.bridgeInterface === 'string' && dl.bridgeInterface)
          settings.podBridgeInterface = dl.bridgeInterface;
        if (typeof dl.interfaceNamePrefix === 'string' && dl.interfaceNamePrefix)
          settings.podInterfaceNamePrefix = dl.interfaceNamePrefix;
        break;
      }
      default:
        ignore(field, 'no nftproxy equivalent');
    }
  }
  if (first('masqueradeAll') === true) settings.masqueradeAll = true;
  // 0s is kube-proxy's "default" (30s and 1s): nftproxy's own defaults then.
  const sync = goDuration(first('syncPeriod'));
  if (sync) settings.syncPeriod = sync;
  const minSync = goDuration(first('minSyncPeriod'));
  if (minSync) settings.minSyncInterval = minSync;

  // Unset conntrack fields mean kube-proxy's defaults: what it set on the node.
  const ct = isObj(doc.conntrack) ? doc.conntrack : {};
  const num = (v: unknown, d: number) => (typeof v === 'number' ? v : d);
  settings.conntrackMaxPerCore = num(ct.maxPerCore, CONNTRACK_DEFAULTS.maxPerCore);
  settings.conntrackMin = num(ct.min, CONNTRACK_DEFAULTS.min);
  const timeout = (v: unknown, d?: string) => (v === undefined || v === null ? d : goDuration(v));
  const established = timeout(ct.tcpEstablishedTimeout, CONNTRACK_DEFAULTS.tcpEstablishedTimeout);
  const closeWait = timeout(ct.tcpCloseWaitTimeout, CONNTRACK_DEFAULTS.tcpCloseWaitTimeout);
  const udp = timeout(ct.udpTimeout);
  const udpStream = timeout(ct.udpStreamTimeout);
  if (established) settings.conntrackTCPEstablishedTimeout = established;
  if (closeWait) settings.conntrackTCPCloseWaitTimeout = closeWait;
  if (udp) settings.conntrackUDPTimeout = udp;
  if (udpStream) settings.conntrackUDPStreamTimeout = udpStream;
  if (ct.tcpBeLiberal === true) settings.conntrackTCPBeLiberal = true;
  for (const k of Object.keys(ct))
    if (
      ![
        'maxPerCore',
        'min',
        'tcpEstablishedTimeout',
        'tcpCloseWaitTimeout',
        'udpTimeout',
        'udpStreamTimeout',
        'tcpBeLiberal',
      ].includes(k) &&
      set(ct[k])
    )
      ignore(`conntrack.${k}`, 'no nftproxy equivalent');
  return { settings, ignored };
}
