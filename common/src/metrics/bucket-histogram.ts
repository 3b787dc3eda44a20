/**
 * A histogram for the per-token paths: `observe` is a bucket search and three additions,
 * where prom-client's Histogram builds and hashes a label object on every call (~5 µs, a
 * few per token on the edge and the worker). No labels. It serves prom-client's registry
 * the series a prom-client Histogram of the same buckets would (`_bucket{le}`, `_sum`,
 * `_count`), read at scrape time; bucket-histogram.test.ts compares the two.
 */
import type { Registry } from "prom-client";

export interface BucketHistogramOptions {
  name: string;
  help: string;
  /** Upper bounds, ascending; +Inf is implied. */
  buckets: readonly number[];
  registers: Registry[];
}

export class BucketHistogram {
  readonly name: string;
  readonly help: string;
  readonly type = "histogram";
  readonly aggregator = "sum";
  private readonly bounds: Float64Array;
  /** Per bucket (the last one +Inf), not cumulative. */
  private readonly counts: Float64Array;
  private sum = 0;
  private count = 0;

  constructor(options: BucketHistogramOptions) {
    this.name = options.name;
    this.help = options.help;
    this.bounds = Float64Array.from(options.buckets);
    for (let i = 1; i < this.bounds.length; i++)
      if (!(this.bounds[i] > this.bounds[i - 1]))
        throw new RangeError(`${options.name}: buckets must ascend, got ${options.buckets.join(", ")}`);
    this.counts = new Float64Array(this.bounds.length + 1);
    for (const registry of options.registers) registry.registerMetric(this as never);
  }

  observe(value: number): void {
    let bucket = 0;
    while (bucket < this.bounds.length && value > this.bounds[bucket]) bucket++;
    this.counts[bucket]++;
    this.sum += value;
    this.count++;
  }

  /** What prom-client's registry reads when it is scraped. */
  get(): Promise<{
    name: string;
    help: string;
    type: string;
    aggregator: string;
    values: { labels: Record<string, string | number>; value: number; metricName: string }[];
  }> {
    const values: { labels: Record<string, string | number>; value: number; metricName: string }[] = [];
    let cumulative = 0;
    for (let i = 0; i < this.counts.length; i++) {
      cumulative += this.counts[i];
      values.push({
        labels: { le: i < this.bounds.length ? this.bounds[i] : "+Inf" },
        value: cumulative,
        metricName: `${this.name}_bucket`,
      });
    }
    values.push({ labels: {}, value: this.sum, metricName: `${this.name}_sum` });
    values.push({ labels: {}, value: this.count, metricName: `${this.name}_count` });
    return Promise.resolve({
      name: this.name,
      help: this.help,
      type: this.type,
      aggregator: this.aggregator,
      values,
    });
  }

  reset(): void {
    this.counts.fill(0);
    this.sum = 0;
    this.count = 0;
  }
}
