import { describe, expect, it } from "vitest";
import { AlwaysDeferPolicy, AlwaysExitPolicy, ThresholdExitPolicy, type ExitSignal } from "./exit-policy.ts";

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
