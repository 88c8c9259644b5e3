#!/usr/bin/env node
// Starts the CLI. The compiled dist/ when it is there and no source is newer than it (the
// container image, and a checkout after `npm ci`, which builds it); otherwise, in a checkout
// being edited, the TypeScript sources through tsx, so they are never stale. tsx costs about
// half a second per run (docs/benchmarks.md, the CLI's start).
import { existsSync, readdirSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = new URL('..', import.meta.url);
const built = new URL('dist/cli/main.js', root);
const srcDir = fileURLToPath(new URL('src', root));

/** The newest modification time of the .ts files under `dir` (0 without any). */
function newest(dir) {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = `${dir}/${e.name}`;
    if (e.isDirectory()) t = Math.max(t, newest(p));
    else if (e.name.endsWith('.ts')) t = Math.max(t, statSync(p).mtimeMs);
  }
  return t;
}

let entry = built.href;
const stale = !existsSync(built) || (existsSync(srcDir) && newest(srcDir) > statSync(built).mtimeMs);
if (stale && existsSync(srcDir)) {
  try {
    const { register } = await import('tsx/esm/api');
    register();
    entry = new URL('src/cli/main.ts', root).href;
  } catch {
    // tsx is a dev dependency; without it, fall back to the compiled code.
  }
}
// `nftproxy render | head`: a closed pipe ends the output, not the process with a stack.
process.stdout.on('error', (e) => {
  if (e.code === 'EPIPE') process.exit(0);
  throw e;
});
const { main } = await import(entry);
process.exitCode = await main(process.argv);
