/**
 * Writes crds/proxypolicies.nftproxy.dev.yaml from the ProxyPolicy model (src/api/model.ts):
 * `npm run crd`. With --check, writes nothing and exits 1 if the file is not up to date.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { renderCRD } from '../src/api/crd.js';

const file = fileURLToPath(new URL('../crds/proxypolicies.nftproxy.dev.yaml', import.meta.url));
const text = renderCRD();
if (process.argv.includes('--check')) {
  if (readFileSync(file, 'utf8') !== text) {
    console.error(`${file} is not what src/api/model.ts generates: run npm run crd`);
    process.exit(1);
  }
} else {
  writeFileSync(file, text);
  console.log(`wrote ${file}`);
}
