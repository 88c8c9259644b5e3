/**
 * The docs say what the program does: every sample in README.md and docs/*.md that can run
 * offline (an `nftproxy` command with `--manifests` and no `--netns`, followed by its output)
 * is run, and its output must equal the sample line for line, up to a last line `...` that
 * elides the rest. Every flag the README's settings table names must exist in `run --help`,
 * and no help text may print an empty default.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { runCli } from '../support/cli.js';

const repo = (p: string) => fileURLToPath(new URL(`../../${p}`, import.meta.url));
const DOCS = [
  'README.md',
  ...readdirSync(repo('docs'))
    .filter((f) => f.endsWith('.md'))
    .map((f) => `docs/${f}`),
];

interface Sample {
  file: string;
  line: number;
  args: string[];
  output: string[];
}

/** Fenced blocks of a markdown text: language, first line number, lines. */
function blocks(text: string): { lang: string; line: number; lines: string[]; endLine: number }[] {
  const out: { lang: string; line: number; lines: string[]; endLine: number }[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const open = /^```(\w*)\s*$/.exec(lines[i]!);
    if (!open) continue;
    const start = i;
    const body: string[] = [];
    for (i++; i < lines.length && !/^```\s*$/.test(lines[i]!); i++) body.push(lines[i]!);
    out.push({ lang: open[1]!, line: start + 1, lines: body, endLine: i + 1 });
  }
  return out;
}

/** `npx nftproxy explain --a b \` + `--c d` -> [explain, --a, b, --c, d]; undefined if not one. */
function command(lines: string[]): string[] | undefined {
  const text = lines
    .join('\n')
    .replace(/\\\n\s*/g, ' ')
    .trim();
  if (text.includes('\n')) return undefined;
  const m = /^(?:\$ )?(?:npx )?nftproxy (.*)$/.exec(text);
  return m ? m[1]!.split(/\s+/) : undefined;
}

/** The runnable samples: a command block followed by an output block. */
function samples(): Sample[] {
  const out: Sample[] = [];
  for (const file of DOCS) {
    const text = readFileSync(repo(file), 'utf8');
    const bs = blocks(text);
    bs.forEach((b, i) => {
      const args = b.lang === 'sh' ? command(b.lines) : undefined;
      const next = bs[i + 1];
      if (!args || !next || next.lang !== '' || next.line - b.endLine > 2) return;
      if (!args.includes('--manifests') || args.includes('--netns') || args.some((a) => /^[A-Z]+$/.test(a)))
        return; // a live table, or a placeholder (DIR, NAME) to fill in
      out.push({ file, line: b.line, args, output: next.lines });
    });
  }
  return out;
}

describe('docs samples against real output', function () {
  this.timeout(60_000);
  const found = samples();

  it('finds the samples (README explain at least)', () => {
    assert.ok(
      found.some((s) => s.file === 'README.md' && s.args[0] === 'explain'),
      JSON.stringify(found.map((s) => `${s.file}:${s.line}`)),
    );
  });

  for (const s of found) {
    it(`${s.file}:${s.line}: nftproxy ${s.args.join(' ')}`, async () => {
      const r = await runCli(s.args, { NODE_NAME: undefined }, repo(''));
      const got = r.stdout.split('\n');
      const elided = s.output.at(-1)?.trim() === '...';
      const want = elided ? s.output.slice(0, -1) : s.output;
      assert.deepEqual(elided ? got.slice(0, want.length) : got, want, r.stderr);
    });
  }

  it("every flag of the README's settings table is one of `nftproxy run`", async () => {
    const readme = readFileSync(repo('README.md'), 'utf8');
    const table = readme.slice(readme.indexOf('## Configuration'));
    const flags = [...table.matchAll(/^\| `(--[a-z-]+)`/gm)].map((m) => m[1]!);
    assert.ok(flags.length >= 10, `settings table flags: ${flags.join(' ')}`);
    const r = await runCli(['run', '--help']);
    assert.equal(r.exitCode, 0, r.stderr);
    const help = r.stdout;
    for (const f of flags)
      assert.ok(help.includes(`${f} `) || help.includes(`${f}\n`), `${f} is not in run --help`);
  });

  it('no help text prints an empty or repeated default', async () => {
    for (const cmd of ['run', 'render', 'explain', 'diff', 'status', 'conntrack', 'cleanup']) {
      const r = await runCli([cmd, '--help']);
      assert.equal(r.exitCode, 0, `${cmd} --help: ${r.stderr}`);
      const help = r.stdout;
      assert.ok(!help.includes('(default: [])'), `${cmd}: (default: [])`);
      for (const block of help.split(/\n(?=\s*-)/))
        assert.ok((block.match(/\(default/g) ?? []).length <= 1, `${cmd}: two defaults in ${block}`);
    }
  });
});
