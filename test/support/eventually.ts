/**
 * Retries a check until it passes: the one helper for "this happens soon" in tests. Give
 * failing assertions in the check a message: without one, Node 20 re-parses the test file to
 * build it, on every retry.
 */

/** Runs `check` every `everyMs` until it returns without throwing, for up to `timeoutMs`; then rethrows its last failure. */
export async function eventually<T>(
  check: () => Promise<T> | T,
  timeoutMs = 10_000,
  everyMs = 100,
): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (e) {
      if (Date.now() > end) throw e;
      await new Promise((r) => setTimeout(r, everyMs));
    }
  }
}
