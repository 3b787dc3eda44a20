import { describe, expect, it } from "vitest";
import { InvalidArgumentError, TandemError, UnavailableError } from "./errors.ts";
import { BATCH_JOB_BACKOFF, CLOUD_LINK_BACKOFF, backoffDelayMs, isRetryable } from "./retry-policy.ts";

describe("the retry policy", () => {
  it("retries outages and unknown failures, never what the caller got wrong", () => {
    expect(isRetryable(new UnavailableError("down"))).toBe(true);
    expect(isRetryable(new Error("socket hang up"))).toBe(true);
    expect(isRetryable(new InvalidArgumentError("prompts", "must hold at least 1 item"))).toBe(false);
    expect(isRetryable(new TandemError("TENSOR_MISSING", "gone"))).toBe(false);
  });

  it("waits exponentially longer, capped, each wait drawn from its upper (1 − jitter) part", () => {
    const policy = { attempts: 10, initialDelayMs: 100, maxDelayMs: 1000, jitter: 0.5 };
    expect([1, 2, 3, 4, 5, 6].map((n) => backoffDelayMs(policy, n, () => 0))).toEqual([
      100, 200, 400, 800, 1000, 1000,
    ]);
    expect(backoffDelayMs(policy, 3, () => 0.999999)).toBe(200);
    for (let i = 0; i < 200; i++) {
      const wait = backoffDelayMs(policy, 2);
      expect(wait).toBeGreaterThanOrEqual(100);
      expect(wait).toBeLessThanOrEqual(200);
    }
  });

  it("keeps the edge's link quick to retry and batch jobs to three tries", () => {
    expect(backoffDelayMs(CLOUD_LINK_BACKOFF, 1, () => 0)).toBe(250);
    expect(backoffDelayMs(CLOUD_LINK_BACKOFF, 20, () => 0)).toBe(1000);
    expect(BATCH_JOB_BACKOFF.attempts).toBe(3);
  });
});
