/**
 * Which ProxyPolicies select a Service, and which one governs it. Pure; used by the store
 * (what a policy change dirties), the compiler and the status reports.
 *
 * Precedence, when several valid policies of a namespace select one service: a policy that
 * names the service (`serviceNames`) beats one that selects it by labels; then the older
 * policy (creationTimestamp) wins; then the first by name. The losers are reported as
 * conflicted for that service (docs/proxypolicy.md).
 */
import type { Service } from '../k8s/types.js';
import type { LabelSelector, PolicyObject } from './types.js';

/** Whether a label selector matches a set of labels (Kubernetes semantics; empty matches all). */
export function selectorMatches(sel: LabelSelector, labels: Record<string, string>): boolean {
  for (const [k, v] of Object.entries(sel.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const e of sel.matchExpressions ?? []) {
    const has = Object.hasOwn(labels, e.key);
    const v = has ? labels[e.key] : undefined;
    switch (e.operator) {
      case 'In':
        if (!has || !(e.values ?? []).includes(v!)) return false;
        break;
      case 'NotIn':
        if (has && (e.values ?? []).includes(v!)) return false;
        break;
      case 'Exists':
        if (!has) return false;
        break;
      case 'DoesNotExist':
        if (has) return false;
        break;
    }
  }
  return true;
}

/** Whether a valid policy selects a service (same namespace only). */
export function selects(p: PolicyObject, svc: Service): boolean {
  if (!p.spec || p.metadata.namespace !== svc.metadata.namespace) return false;
  const { serviceNames, serviceSelector } = p.spec.selector;
  if (serviceNames) return serviceNames.includes(svc.metadata.name);
  return serviceSelector ? selectorMatches(serviceSelector, svc.metadata.labels) : false;
}

/** Negative when `a` takes precedence over `b` for a service both select. */
export function comparePolicies(a: PolicyObject, b: PolicyObject): number {
  const byName = (p: PolicyObject) => (p.spec?.selector.serviceNames ? 0 : 1);
  if (byName(a) !== byName(b)) return byName(a) - byName(b);
  const ta = a.metadata.creationTimestamp ?? '';
  const tb = b.metadata.creationTimestamp ?? '';
  // RFC 3339 in UTC ("...Z", as the API server writes it) orders as text; missing sorts last.
  if (ta !== tb) return !ta ? 1 : !tb ? -1 : ta < tb ? -1 : 1;
  return a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0;
}

/** The policy governing a service, and the others that select it too. */
export function policyFor(
  policies: Iterable<PolicyObject>,
  svc: Service,
): { policy?: PolicyObject; others: PolicyObject[] } {
  const matching = [...policies].filter((p) => selects(p, svc)).sort(comparePolicies);
  return matching.length ? { policy: matching[0]!, others: matching.slice(1) } : { others: [] };
}
