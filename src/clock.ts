/**
 * Time and timers, injectable: the sync queue, the health checks and the API source read the
 * time and wait through a Clock, so that tests can move time by hand (test/support/clock.ts).
 */

/** Time and timers. */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** The real clock. */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

/** A wait of `ms` on `clock`; `wake()` ends it early. */
export function sleepOn(clock: Clock, ms: number): { done: Promise<void>; wake: () => void } {
  let wake = () => {};
  const done = new Promise<void>((resolve) => {
    const t = clock.setTimeout(resolve, ms);
    wake = () => {
      clock.clearTimeout(t);
      resolve();
    };
  });
  return { done, wake };
}
