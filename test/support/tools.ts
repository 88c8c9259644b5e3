/**
 * The helm and kubectl (v1.30, with kustomize v5) binaries scripts/helm-fetch caches: the
 * real tools the chart and manifest tests compare with. Tests skip without them, and fail
 * under CI, where scripts/test fetches them.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { needs } from './require.js';

/** Where scripts/helm-fetch puts them. */
export const TOOLS_BIN = join(
  process.env.NFTPROXY_HELM_CACHE ?? '/var/cache/nftproxy/kubectl-layer-2.0.4',
  'bin',
);

/** The path of `helm` or `kubectl`, or undefined when scripts/helm-fetch has not run. */
export function tool(name: 'helm' | 'kubectl'): string | undefined {
  const path = join(TOOLS_BIN, name);
  return existsSync(path) ? path : undefined;
}

/** The tool, or skips the test (fails under CI, which must have it). */
export function requireTool(ctx: Mocha.Context, name: 'helm' | 'kubectl'): string {
  const path = tool(name);
  needs(ctx, path ? undefined : `${name} not in ${TOOLS_BIN}: run scripts/helm-fetch`);
  return path!;
}
