/** Summaries of repeated measurements, in milliseconds. */
export interface Summary {
  n: number;
  median: number;
  min: number;
  max: number;
  p99: number;
}

/** Median, extremes and p99 (nearest rank) of `xs`. */
export function summarize(xs: number[]): Summary {
  if (!xs.length) throw new Error('no measurements');
  const s = [...xs].sort((a, b) => a - b);
  const rank = (p: number) => s[Math.min(s.length - 1, Math.ceil(p * s.length) - 1)]!;
  const mid = s.length >> 1;
  return {
    n: s.length,
    median: s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2,
    min: s[0]!,
    max: s.at(-1)!,
    p99: rank(0.99),
  };
}

/** `1.23 s` or `45.6 ms`. */
export function formatMs(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(1)} ms`;
}
