/** BucketHistogram serves what prom-client's Histogram would, for the same observations. */
import { Histogram, Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { BucketHistogram } from "./bucket-histogram.ts";

describe("BucketHistogram", () => {
  it("exposes the same lines as prom-client's Histogram of the same buckets", async () => {
    const buckets = [0.001, 0.005, 0.01, 1, 5];
    const ours = new Registry();
    const theirs = new Registry();
    const fast = new BucketHistogram({ name: "step_seconds", help: "A step", buckets, registers: [ours] });
    const reference = new Histogram({ name: "step_seconds", help: "A step", buckets, registers: [theirs] });
    // On the bounds, between them, past the last, and zero.
    for (const value of [0, 0.001, 0.0011, 0.005, 0.2, 1, 4.9, 5, 7, 1e6]) {
      fast.observe(value);
      reference.observe(value);
    }
    expect(await ours.metrics()).toBe(await theirs.metrics());
    expect(await ours.metrics()).toContain('step_seconds_bucket{le="+Inf"} 10');
    fast.reset();
    reference.reset();
    reference.zero({});
    expect(await ours.metrics()).toBe(await theirs.metrics());
  });

  it("refuses buckets that do not ascend", () => {
    expect(() => new BucketHistogram({ name: "x", help: "x", buckets: [1, 1], registers: [] })).toThrow(
      /ascend/,
    );
  });
});
