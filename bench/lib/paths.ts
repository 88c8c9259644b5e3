/**
 * Paths in the repository, wherever the benchmark code runs from: benchmarks run compiled
 * (`npm run bench` builds them into dist-bench/ first), so `import.meta.url` is not in bench/.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root: the nearest directory above this file with a package.json. */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('no package.json above the benchmark code');
    dir = up;
  }
  return dir;
}

/** A path relative to the repository root. */
export function repoPath(...parts: string[]): string {
  return join(repoRoot(), ...parts);
}

/**
 * The command that runs the nftproxy CLI from the same build as this code: the compiled
 * main, without tsx.
 */
export function nftproxyCommand(): string[] {
  return [process.execPath, fileURLToPath(new URL('./cli.js', import.meta.url))];
}
