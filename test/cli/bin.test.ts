/**
 * bin/nftproxy.js chooses what to run: the compiled dist/ when no source is newer than it,
 * the TypeScript sources (through tsx) otherwise, so a checkout being edited never runs
 * stale code and a built one starts without transpiling.
 */
import assert from 'node:assert/strict';
import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, resolve } from 'node:path';
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

describe('what the CLI loads to start', () => {
  /** The modules reachable from `file` through static imports (relative ones followed), and the packages. */
  function staticImports(file: string, seen = new Set<string>(), packages = new Set<string>()) {
    if (seen.has(file)) return { seen, packages };
    seen.add(file);
    const text = readFileSync(file, 'utf8');
    // `import ... from 'x'` and `export ... from 'x'`, not `import type` (erased) nor `import('x')`.
    const specs = [
      ...[...text.matchAll(/^(?:import|export)\s+(?!type\s)[^;]*?\sfrom\s+'([^']+)';/gms)].map((m) => m[1]!),
      ...[...text.matchAll(/^import\s+'([^']+)';/gm)].map((m) => m[1]!),
    ];
    for (const spec of specs) {
      if (spec.startsWith('.'))
        staticImports(resolve(dirname(file), spec.replace(/\.js$/, '.ts')), seen, packages);
      else packages.add(spec);
    }
    return { seen, packages };
  }

  it("does not load client-node, prom-client or OpenTelemetry's SDK before a command needs them", () => {
    const main = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
    const { seen, packages } = staticImports(main);
    assert.ok(seen.size > 20, `${seen.size} modules`);
    assert.ok(packages.has('commander'), [...packages].join(' '));
    for (const heavy of ['@kubernetes/client-node', 'prom-client', '@opentelemetry/sdk-trace-base'])
      assert.ok(!packages.has(heavy), `${heavy} is loaded at start (through a static import)`);
    // The operator is what `run` loads when it runs.
    assert.ok(![...seen].some((f) => f.endsWith('cli/operate.ts')), 'operate.ts is loaded at start');
  });
});
