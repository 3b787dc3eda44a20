import { describe, expect, it } from "vitest";
import { withLearnedConfidence } from "../exits/confidence-model.ts";
import { fitConfidenceModel } from "./fit-confidence-model.ts";
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

  it("with a candidate at every position, finds the best thresholds of several exits (checked against brute force)", () => {
    // A third exit, after 4, surer than the one after 3.
    const records = synthetic(48, 5).map((r, i) => ({
      ...r,
      exits: [
        ...r.exits,
        { ...r.exits[1], afterLayer: 4, prob: Math.min(1, r.exits[1].prob + (i % 5) / 20) },
      ],
    }));
    const target = 0.9;
    const choices = (layer: number) => [
      Infinity,
      ...records.map((r) => r.exits.find((e) => e.afterLayer === layer)!.prob),
    ];
    let best = 0;
    for (const t2 of choices(2))
      for (const t3 of choices(3))
        for (const t4 of choices(4)) {
          const o = evaluatePolicy(records, [
            { afterLayer: 2, metric: "prob" as const, threshold: t2 },
            { afterLayer: 3, metric: "prob" as const, threshold: t3 },
            { afterLayer: 4, metric: "prob" as const, threshold: t4 },
          ]);
          if (o.agreement >= target) best = Math.max(best, o.edgeShare);
        }
    const { outcome } = searchThresholds(records, [2, 3, 4], "prob", target, records.length);
    expect(best).toBeGreaterThan(0);
    expect(outcome.edgeShare).toBeCloseTo(best, 10);
    expect(outcome.agreement).toBeGreaterThanOrEqual(target);
  });

  it("answers nothing at the exits when agreement must be perfect and exits err", () => {
    const records = synthetic(500, 4).map((r) => ({ ...r, exits: r.exits.map((e) => ({ ...e, token: 8 })) }));
    const { outcome } = searchThresholds(records, [2, 3], "prob", 1);
    expect(outcome.edgeShare).toBe(0);
    expect(outcome.agreement).toBe(1);
  });

  it("with the learned metric, answers what no single signal can tell apart", () => {
    // The exit after 3 is right exactly when the exit after 2 said the same token, and its
    // own probability says nothing about it: only a model reading both exits can rank.
    let state = 5;
    const uniform = () => ((state = (state * 1664525 + 1013904223) >>> 0) + 0.5) / 2 ** 32;
    const records: PositionRecord[] = Array.from({ length: 3000 }, () => {
      const agree = uniform() < 0.6;
      const prob = 0.3 + 0.6 * uniform();
      return {
        finalToken: 1,
        exits: [
          { afterLayer: 2, token: agree ? 1 : 2, prob: uniform(), margin: 0.1, entropy: 1 },
          { afterLayer: 3, token: agree ? 1 : 3, prob, margin: prob / 2, entropy: 2 - prob },
        ],
      };
    });
    const { model } = fitConfidenceModel(records, 3, 2);
    const scored = records.map((r) => ({ ...r, exits: withLearnedConfidence(r.exits, [model]) }));
    const learned = searchThresholds(scored, [3], "learned", 0.99).outcome;
    expect(learned.agreement).toBeGreaterThanOrEqual(0.99);
    expect(learned.edgeShare).toBeGreaterThan(0.6);
    for (const metric of ["prob", "margin", "entropy"] as const)
      expect(searchThresholds(scored, [3], metric, 0.99).outcome.edgeShare).toBeLessThan(0.2);
  });
});
