import { describe, expect, it } from "vitest";
import {
  AlwaysDeferPolicy,
  AlwaysExitPolicy,
  BudgetExitPolicy,
  RollingEntropyPolicy,
  ThresholdExitPolicy,
  type ExitSignal,
} from "./exit-policy.ts";
import { confidenceFeatureNames, quadraticTermCount, type ConfidenceModel } from "./confidence-model.ts";

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

  describe("with a learned confidence", () => {
    // logit = −2 + 4·prob + 3·same_token (features unscaled, every other weight 0): the
    // exit after 3 is trusted at a lower probability when the exit after 2 said the same token.
    const features = confidenceFeatureNames(true);
    const weights = new Array<number>(quadraticTermCount(features.length)).fill(0);
    weights[features.indexOf("prob")] = 4;
    weights[features.indexOf("same_token")] = 3;
    const model: ConfidenceModel = {
      afterLayer: 3,
      previousLayer: 2,
      features,
      mean: features.map(() => 0),
      scale: features.map(() => 1),
      weights,
      bias: -2,
    };
    const learned = new ThresholdExitPolicy([{ afterLayer: 3, metric: "learned", threshold: 1.5 }], [model]);
    const agreeing = (prob: number) => [
      { ...signal(2, 0.4, 0.1, 2), token: 7 },
      { ...signal(3, prob, 0.1, 2), token: 7 },
    ];
    const differing = (prob: number) => [signal(2, 0.4, 0.1, 2), signal(3, prob, 0.1, 2)];

    it("answers where the model's log-odds reach the threshold, reading the earlier exit too", () => {
      const answer = learned.decide(agreeing(0.3)).exit; // −2 + 1.2 + 3 = 2.2
      expect(answer).toMatchObject({ afterLayer: 3, token: 7 });
      expect(answer?.learned).toBeCloseTo(2.2, 9);
      expect(learned.decide(agreeing(0.1)).exit).toBeUndefined(); // −2 + 0.4 + 3 = 1.4
    });

    it("the same probability without the earlier exit's agreement is not enough", () => {
      expect(learned.decide(differing(0.3)).exit).toBeUndefined(); // −2 + 1.2 = −0.8
      expect(learned.decide(differing(0.8)).exit).toBeUndefined(); // −2 + 3.2 = 1.2
      expect(learned.decide(differing(0.9)).exit?.afterLayer).toBe(3); // −2 + 3.6 = 1.6
    });

    it("never answers when the earlier exit it reads is missing, and leaves the signals as they were", () => {
      const alone = [signal(3, 0.99, 0.99, 0.01)];
      expect(learned.decide(alone).exit).toBeUndefined();
      expect(alone[0].learned).toBeUndefined();
    });

    it("refuses a learned rule without a model for its exit", () => {
      expect(
        () => new ThresholdExitPolicy([{ afterLayer: 2, metric: "learned", threshold: 0 }], [model]),
      ).toThrow(/confidence: the rule after layer 2 uses the learned metric, but no confidence model/);
    });
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
