import { describe, expect, it } from "vitest";
import { evaluatePolicy, searchThresholds, type PositionRecord } from "./threshold-search.ts";

/** Records where exit confidence predicts correctness: correct when prob > 0.5 + noise. */
function synthetic(count: number, seed: number): PositionRecord[] {
  let state = seed;
  const uniform = () => ((state = (state * 1664525 + 1013904223) >>> 0) + 0.5) / 2 ** 32;
  return Array.from({ length: count }, () => {
    const p2 = uniform();
    const p3 = Math.min(1, p2 + uniform() * 0.3);
    const finalToken = 7;
    const signal = (afterLayer: number, prob: number) => ({
      afterLayer,
      prob,
      margin: prob * 0.8,
      entropy: 3 * (1 - prob),
      token: uniform() < prob ? finalToken : 8,
    });
    return { finalToken, exits: [signal(2, p2), signal(3, p3)] };
  });
}

describe("threshold search", () => {
  for (const target of [0.99, 0.97, 0.95, 0.9]) {
    it(`keeps agreement ≥ ${target} on the records it chose from, for every metric`, () => {
      const records = synthetic(2000, 1);
      for (const metric of ["prob", "margin", "entropy"] as const) {
        const { outcome } = searchThresholds(records, [2, 3], metric, target);
        expect(outcome.agreement).toBeGreaterThanOrEqual(target);
        expect(outcome.edgeShare).toBeGreaterThan(0);
      }
    });
  }

  it("answers more at the edge as the target loosens", () => {
    const records = synthetic(2000, 2);
    const shares = [0.99, 0.95, 0.9].map(
      (t) => searchThresholds(records, [2, 3], "prob", t).outcome.edgeShare,
    );
    expect(shares[0]).toBeLessThanOrEqual(shares[1]);
    expect(shares[1]).toBeLessThanOrEqual(shares[2]);
  });

  it("finds the best single-exit threshold (checked against brute force)", () => {
    const records = synthetic(400, 3);
    const target = 0.95;
    const { outcome } = searchThresholds(records, [3], "prob", target);
    let best = 0;
    for (const r of records) {
      const threshold = r.exits[1].prob;
      const o = evaluatePolicy(records, [{ afterLayer: 3, metric: "prob", threshold }]);
      if (o.agreement >= target) best = Math.max(best, o.edgeShare);
    }
    expect(outcome.edgeShare).toBeCloseTo(best, 10);
  });

  it("answers nothing at the exits when agreement must be perfect and exits err", () => {
    const records = synthetic(500, 4).map((r) => ({ ...r, exits: r.exits.map((e) => ({ ...e, token: 8 })) }));
    const { outcome } = searchThresholds(records, [2, 3], "prob", 1);
    expect(outcome.edgeShare).toBe(0);
    expect(outcome.agreement).toBe(1);
  });
});
