/**
 * The samples of a prom-client registry, looked up by name and exact labels (histograms as
 * their `_bucket{le}`, `_sum` and `_count` samples).
 */
import assert from 'node:assert/strict';
import type { Registry } from 'prom-client';

/** One sample: its full name (`x_bucket`...), labels as strings, value. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** What a registry holds at one moment. */
export class Samples {
  constructor(
    /** Metric type by family name. */
    readonly types: ReadonlyMap<string, string>,
    readonly list: readonly Sample[],
  ) {}

  /** The value of the sample with exactly these labels, or undefined. */
  value(name: string, labels: Record<string, string> = {}): number | undefined {
    const want = JSON.stringify(Object.entries(labels).sort());
    return this.list.find((s) => s.name === name && JSON.stringify(Object.entries(s.labels).sort()) === want)
      ?.value;
  }

  /** Like value, but the sample must exist. */
  must(name: string, labels: Record<string, string> = {}): number {
    const v = this.value(name, labels);
    assert.ok(v !== undefined, `sample ${name}${JSON.stringify(labels)} exists`);
    return v;
  }
}

/** The samples of `registry` now (its collect functions run). */
export async function samplesOf(registry: Registry): Promise<Samples> {
  const types = new Map<string, string>();
  const list: Sample[] = [];
  for (const m of await registry.getMetricsAsJSON()) {
    types.set(m.name, String(m.type));
    for (const v of m.values as { metricName?: string; labels: Record<string, unknown>; value: number }[]) {
      const labels = Object.fromEntries(Object.entries(v.labels).map(([k, x]) => [k, String(x)]));
      list.push({ name: v.metricName ?? m.name, labels, value: v.value });
    }
  }
  return new Samples(types, list);
}
