/**
 * bin/nftproxy.js chooses what to run: the compiled dist/ when no source is newer than it,
 * the TypeScript sources (through tsx) otherwise, so a checkout being edited never runs
 * stale code and a built one starts without transpiling.
 */
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';

const repo = (p: string) => fileURLToPath(new URL(`../../${p}`, import.meta.url));

describe('bin/nftproxy.js', function () {
  this.timeout(30_000);
  let dir: string;

  before(() => {
    // Inside the repository, so that tsx resolves from its node_modules.
    mkdirSync(repo('tmp-scratch'), { recursive: true });
    dir = mkdtempSync(join(repo('tmp-scratch'), 'bin-'));
    for (const d of ['bin', 'dist/cli', 'src/cli']) mkdirSync(join(dir, d), { recursive: true });
    copyFileSync(repo('bin/nftproxy.js'), join(dir, 'bin/nftproxy.js'));
    writeFileSync(
      join(dir, 'dist/cli/main.js'),
      "export async function main() { console.log('dist'); return 0; }\n",
    );
    writeFileSync(
      join(dir, 'src/cli/main.ts'),
      "export async function main(): Promise<number> { console.log('src'); return 0; }\n",
    );
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const runs = async () => (await execa('node', [join(dir, 'bin/nftproxy.js')])).stdout;
  const at = (file: string, seconds: number) => utimesSync(join(dir, file), seconds, seconds);

  it('runs dist/ when it is newer than every source', async () => {
    at('src/cli/main.ts', 1_000_000);
    at('dist/cli/main.js', 2_000_000);
    assert.equal(await runs(), 'dist');
  });

  it('runs the sources when one is newer than dist/', async () => {
    at('dist/cli/main.js', 1_000_000);
    at('src/cli/main.ts', 2_000_000);
    assert.equal(await runs(), 'src');
  });
});
