/**
 * What a test needs from the machine (root and nft, a real API server, helm): where it is
 * missing the test is skipped, except under CI, which must run every test, where it fails.
 */

/** Skips the test with `why` (fails under CI); does nothing when `why` is undefined. */
export function needs(ctx: Mocha.Context, why: string | undefined): void {
  if (why === undefined) return;
  if (process.env.CI) throw new Error(`cannot run here, and CI must: ${why}`);
  ctx.skip();
}
