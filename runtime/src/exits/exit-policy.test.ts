import { describe, expect, it } from "vitest";
import {
  AlwaysDeferPolicy,
  AlwaysExitPolicy,
  BudgetExitPolicy,
  RollingEntropyPolicy,
  ThresholdExitPolicy,
  type ExitSignal,
} from "./exit-policy.ts";

const signal = (afterLayer: number, prob: number, margin: number, entropy: number): ExitSignal => ({
  afterLayer,
  token: afterLayer * 10,
  prob,
  margin,
  entropy,
});

describe("ThresholdExitPolicy", () => {
  const cases: { name: string; signals: ExitSignal[]; expected: number | undefined }[] = [
    {
      name: "earliest confident exit answers",
      signals: [signal(2, 0.95, 0.9, 0.2), signal(3, 0.99, 0.98, 0.05)],
      expected: 2,
    },
    {
      name: "a later exit answers when the earlier is unsure",
      signals: [signal(2, 0.5, 0.1, 1.5), signal(3, 0.95, 0.9, 0.2)],
      expected: 3,
    },
    {
      name: "defers when no exit is sure",
      signals: [signal(2, 0.5, 0.1, 1.5), signal(3, 0.6, 0.3, 1.1)],
      expected: undefined,
    },
    {
      name: "order of signals does not matter",
      signals: [signal(3, 0.95, 0.9, 0.2), signal(2, 0.95, 0.9, 0.2)],
      expected: 2,
    },
  ];
  const policy = new ThresholdExitPolicy([
    { afterLayer: 2, metric: "prob", threshold: 0.9 },
    { afterLayer: 3, metric: "entropy", threshold: 0.3 },
  ]);
  for (const c of cases) {
    it(c.name, () => expect(policy.decide(c.signals).exit?.afterLayer).toBe(c.expected));
  }

  it("uses margin as a metric", () => {
    const marginPolicy = new ThresholdExitPolicy([{ afterLayer: 2, metric: "margin", threshold: 0.5 }]);
    expect(marginPolicy.decide([signal(2, 0.7, 0.6, 0.9)]).exit?.token).toBe(20);
    expect(marginPolicy.decide([signal(2, 0.7, 0.4, 0.9)]).exit).toBeUndefined();
  });

  it("rejects a non-finite threshold", () => {
    expect(() => new ThresholdExitPolicy([{ afterLayer: 2, metric: "prob", threshold: NaN }])).toThrow(
      /threshold/,
    );
  });
});

describe("fixed policies", () => {
  it("AlwaysDefer never answers and AlwaysExit answers at the deepest exit", () => {
    const signals = [signal(2, 0.1, 0, 3), signal(3, 0.2, 0, 3)];
    expect(new AlwaysDeferPolicy().decide().exit).toBeUndefined();
    expect(new AlwaysExitPolicy().decide(signals).exit?.afterLayer).toBe(3);
  });
});

describe("RollingEntropyPolicy", () => {
  it("answers while the rolling entropy is low and defers through a hard stretch", () => {
    const policy = new RollingEntropyPolicy(1.0, 3);
    const decide = (entropy: number) => policy.decide([signal(3, 0.5, 0.2, entropy)]).exit !== undefined;
    expect([0.2, 0.3, 0.4].map(decide)).toEqual([true, true, true]);
    // One hard token lifts the mean of (0.3, 0.4, 3) over 1: defer.
    expect(decide(3)).toBe(false);
    // It keeps deferring until the hard token leaves the window.
    expect([0.1, 0.1, 0.1].map(decide)).toEqual([false, false, true]);
  });
});

describe("BudgetExitPolicy", () => {
  it("converges to the target escalation rate", () => {
    const policy = new BudgetExitPolicy(0.25, "prob");
    let seed = 1;
    const uniform = () => ((seed = (seed * 1664525 + 1013904223) >>> 0) + 0.5) / 2 ** 32;
    for (let i = 0; i < 4000; i++) policy.decide([signal(3, uniform(), 0, 1)]);
    expect(policy.escalationRate).toBeGreaterThan(0.2);
    expect(policy.escalationRate).toBeLessThan(0.3);
  });

  it("rejects a rate outside (0, 1)", () => {
    expect(() => new BudgetExitPolicy(1.5)).toThrow(/target_escalation_rate/);
  });
});
