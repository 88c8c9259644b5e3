/**
 * Giving memory back after a full sync. A full sync of a large cluster makes a few hundred MB
 * of short-lived objects (every element line, the batch buffer, the API's list pages); after
 * it the operator is idle, and an idle V8 does not collect its old generation, so the garbage
 * stays resident until the next full sync (measured at 50k services: 508 MB resident steady
 * without a collection, 361 MB with one; docs/benchmarks.md). One full collection once the
 * sync is done returns it.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

let collect: (() => void) | null | undefined;

/** V8's full collection, exposed to a fresh context (the process runs without --expose-gc). */
function collector(): (() => void) | undefined {
  if (collect === undefined) {
    try {
      setFlagsFromString('--expose-gc');
      collect = runInNewContext('gc') as () => void;
    } catch {
      collect = null;
    }
  }
  return collect ?? undefined;
}

/** Services from which a full sync's garbage is worth a collection (~100 ms at 50k). */
export const COLLECT_FROM_SERVICES = 5000;

/** Heap in use (bytes) above which a collection is worth its pause. */
export const COLLECT_ABOVE = 64 << 20;

/**
 * Collects garbage once, `delayMs` from now, off the sync's path, if the heap holds more than
 * `above` bytes. Returns the timer (unreferenced: it never keeps the process alive).
 */
export function collectSoon(delayMs = 500, above = COLLECT_ABOVE): NodeJS.Timeout | undefined {
  if (process.memoryUsage().heapUsed < above) return undefined;
  const t = setTimeout(() => collector()?.(), delayMs);
  t.unref();
  return t;
}

/** Whether a full collection can be asked for here (tests). */
export function canCollect(): boolean {
  return collector() !== undefined;
}

/** Collects garbage now, if the heap holds more than `above` bytes. */
export function collectNow(above = COLLECT_ABOVE): void {
  if (process.memoryUsage().heapUsed >= above) collector()?.();
}
