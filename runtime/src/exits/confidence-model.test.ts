import { describe, expect, it } from "vitest";
import {
  confidenceFeatureNames,
  confidenceFeatures,
  learnedConfidence,
  previousExitLayer,
  quadraticTermCount,
  quadraticTerms,
  readsKlPrevious,
  withLearnedConfidence,
  type ConfidenceModel,
} from "./confidence-model.ts";
import type { ExitSignal } from "./exit-policy.ts";

const exit2: ExitSignal = { afterLayer: 2, token: 5, prob: 0.6, margin: 0.3, entropy: 1.2 };
const exit3: ExitSignal = { afterLayer: 3, token: 5, prob: 0.9, margin: 0.85, entropy: 0.4 };

describe("confidence features", () => {
  it("are the exit's own five without an earlier exit, in the order of their names", () => {
    const features = confidenceFeatures(exit3);
    expect(features).toHaveLength(confidenceFeatureNames(false).length);
    expect(features).toEqual([0.9, 0.85, 0.4, Math.log(0.85 + 1e-6), Math.log(1 - 0.9 + 1e-6)]);
  });

  it("add the earlier exit's signals and whether the two exits agree", () => {
    const names = confidenceFeatureNames(true);
    const features = confidenceFeatures(exit3, exit2);
    expect(features).toHaveLength(names.length);
    const byName = Object.fromEntries(names.map((name, i) => [name, features[i]]));
    expect(byName).toMatchObject({
      "previous.prob": 0.6,
      "previous.margin": 0.3,
      "previous.entropy": 1.2,
      same_token: 1,
      "same_token*margin": 0.85,
      "same_token*previous.prob": 0.6,
    });
    const disagreeing = confidenceFeatures(exit3, { ...exit2, token: 6 });
    expect(disagreeing.slice(-3)).toEqual([0, 0, 0]);
  });

  it("add the KL divergence from the earlier exit and its log, when the model reads them", () => {
    const names = confidenceFeatureNames(true, true);
    expect(names.slice(0, -2)).toEqual(confidenceFeatureNames(true));
    expect(names.slice(-2)).toEqual(["kl_previous", "log_kl_previous"]);
    const features = confidenceFeatures({ ...exit3, klPrevious: 0.25 }, exit2, true);
    expect(features).toHaveLength(names.length);
    expect(features.slice(-2)).toEqual([0.25, Math.log(0.25 + 1e-6)]);
    // Rounding can leave a KL of two near-equal distributions a little below zero.
    expect(confidenceFeatures({ ...exit3, klPrevious: -1e-7 }, exit2, true).slice(-2)).toEqual([
      0,
      Math.log(1e-6),
    ]);
  });

  it("stay finite at the edges: probability 1 and margin 0", () => {
    const sure = confidenceFeatures({ afterLayer: 1, token: 0, prob: 1, margin: 0, entropy: 0 });
    expect(sure.every(Number.isFinite)).toBe(true);
  });
});

describe("quadratic terms", () => {
  it("are the values, then each product z[i]·z[j] with i ≤ j, row by row", () => {
    expect(quadraticTerms([2, 3, 5])).toEqual([2, 3, 5, 4, 6, 10, 9, 15, 25]);
    expect(quadraticTermCount(3)).toBe(9);
    expect(quadraticTermCount(11)).toBe(quadraticTerms(new Array<number>(11).fill(1)).length);
  });
});

describe("learned confidence", () => {
  const names = confidenceFeatureNames(true);
  const model: ConfidenceModel = {
    afterLayer: 3,
    previousLayer: 2,
    features: names,
    mean: names.map((_, i) => i / 20),
    scale: names.map((_, i) => 1 + i / 10),
    weights: Array.from({ length: quadraticTermCount(names.length) }, (_, i) => ((i % 7) - 3) / 10),
    bias: -1,
  };

  it("is the bias plus the weighted standardised features and their products", () => {
    const z = confidenceFeatures(exit3, exit2).map((x, i) => (x - model.mean[i]) / model.scale[i]);
    let expected = model.bias;
    let term = 0;
    for (const zi of z) expected += model.weights[term++] * zi;
    for (let i = 0; i < z.length; i++)
      for (let j = i; j < z.length; j++) expected += model.weights[term++] * z[i] * z[j];
    expect(term).toBe(model.weights.length);
    expect(learnedConfidence(model, [exit3, exit2])).toBeCloseTo(expected, 12);
  });

  it("is −Infinity when the exit or the earlier exit it reads did not report", () => {
    expect(learnedConfidence(model, [exit3])).toBe(-Infinity);
    expect(learnedConfidence(model, [exit2])).toBe(-Infinity);
  });

  it("is set on copies of the signals, only at exits with a model", () => {
    const signals = [exit2, exit3];
    const scored = withLearnedConfidence(signals, [model]);
    expect(scored[0]).toBe(exit2);
    expect(scored[1].learned).toBe(learnedConfidence(model, signals));
    expect(exit3.learned).toBeUndefined();
  });

  describe("of a model that reads the KL divergence", () => {
    const klNames = confidenceFeatureNames(true, true);
    const klModel: ConfidenceModel = {
      ...model,
      features: klNames,
      mean: klNames.map(() => 0),
      scale: klNames.map(() => 1),
      weights: Array.from({ length: quadraticTermCount(klNames.length) }, (_, i) => (i === 11 ? -2 : 0)),
      bias: 1,
    };

    it("falls as the distribution moves between the two exits", () => {
      const settled = learnedConfidence(klModel, [exit2, { ...exit3, klPrevious: 0.1 }]);
      const moving = learnedConfidence(klModel, [exit2, { ...exit3, klPrevious: 2 }]);
      expect(settled).toBeCloseTo(1 - 2 * 0.1, 12);
      expect(moving).toBeLessThan(settled);
    });

    it("is −Infinity without the KL, or when the KL is from another exit than the model reads", () => {
      expect(learnedConfidence(klModel, [exit2, exit3])).toBe(-Infinity);
      // An exit between the two: the graph's KL at 4 is from 3, the model reads 2.
      const exit4 = { ...exit3, afterLayer: 4, klPrevious: 0.1 };
      const model4 = { ...klModel, afterLayer: 4, previousLayer: 2 };
      expect(learnedConfidence(model4, [exit2, exit3, exit4])).toBe(-Infinity);
      expect(learnedConfidence(model4, [exit2, exit4])).toBeCloseTo(1 - 0.2, 12);
    });

    it("is read from the model's feature names", () => {
      expect(readsKlPrevious(klModel)).toBe(true);
      expect(readsKlPrevious(model)).toBe(false);
    });
  });

  it("reads the nearest earlier exit", () => {
    expect(previousExitLayer(3, [1, 2, 3])).toBe(2);
    expect(previousExitLayer(3, [3, 1])).toBe(1);
    expect(previousExitLayer(1, [1, 2])).toBeUndefined();
  });
});
