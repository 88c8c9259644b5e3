#!/usr/bin/env node
// Starts the CLI. In a checkout (after `npm ci`) it runs the TypeScript sources through tsx,
// so they are never stale; in the container image only the compiled dist/ exists.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = new URL('..', import.meta.url);
const sources = fileURLToPath(new URL('src/cli/main.ts', root));
let entry = new URL('dist/cli/main.js', root).href;
if (existsSync(sources)) {
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
