import { describe, expect, it } from "vitest";
import { fitLogistic } from "./logistic-regression.ts";

/** A seeded uniform generator in [0, 1). */
function seeded(seed: number): () => number {
  let state = seed;
  return () => (state = (state * 1664525 + 1013904223) >>> 0) / 2 ** 32;
}

/** Rows of three features on different scales and offsets, labelled by a known logistic model. */
function sample(count: number, seed: number) {
  const random = seeded(seed);
  const truth = { weights: [1.5, -0.02, 4], bias: -0.5 };
  const rows: number[][] = [];
  const labels: boolean[] = [];
  for (let r = 0; r < count; r++) {
    const row = [random() * 2 - 1, 50 + random() * 100, random() * 0.5];
    const z = truth.bias + row.reduce((sum, x, i) => sum + truth.weights[i] * x, 0);
    rows.push(row);
    labels.push(random() < 1 / (1 + Math.exp(-z)));
  }
  return { truth, rows, labels };
}

describe("fitLogistic", () => {
  it("recovers the weights and bias of the model that drew the labels, on the raw features' scales", () => {
    const { truth, rows, labels } = sample(40_000, 7);
    const fit = fitLogistic(rows, labels, { l2: 1e-8 });
    expect(fit.weights[0]).toBeCloseTo(truth.weights[0], 1);
    expect(fit.weights[1]).toBeCloseTo(truth.weights[1], 2);
    expect(fit.weights[2]).toBeCloseTo(truth.weights[2], 0);
    expect(Math.abs(fit.bias - truth.bias)).toBeLessThan(0.35);
    expect(fit.iterations).toBeLessThan(20);
  });

  it("lowers the log-loss below the best constant's", () => {
    const { rows, labels } = sample(5_000, 11);
    const p = labels.filter(Boolean).length / labels.length;
    const constant = -(p * Math.log(p) + (1 - p) * Math.log(1 - p));
    expect(fitLogistic(rows, labels).logLoss).toBeLessThan(constant - 0.05);
  });

  it("stays finite on separable labels, one-class labels and a constant column", () => {
    const rows = Array.from({ length: 200 }, (_, i) => [i, 3]);
    const separable = fitLogistic(
      rows,
      rows.map(([x]) => x >= 100),
    );
    expect([...separable.weights, separable.bias].every(Number.isFinite)).toBe(true);
    // Separable: every row is on its side of the fitted boundary.
    rows.forEach(([x, c], i) =>
      expect(separable.bias + separable.weights[0] * x + separable.weights[1] * c > 0).toBe(i >= 100),
    );
    const oneClass = fitLogistic(
      rows,
      rows.map(() => true),
    );
    expect([...oneClass.weights, oneClass.bias].every(Number.isFinite)).toBe(true);
    expect(oneClass.bias).toBeGreaterThan(3);
  });

  it("names what is wrong with its input", () => {
    expect(() => fitLogistic([], [])).toThrow(/rows: need at least one row/);
    expect(() => fitLogistic([[1], [2]], [true])).toThrow(/labels: has 1 entries for 2 rows/);
    expect(() => fitLogistic([[1, 2], [3]], [true, false])).toThrow(
      /rows: row 1 has 1 features, row 0 has 2/,
    );
    expect(() => fitLogistic([[1], [NaN]], [true, false])).toThrow(
      /rows: row 1 holds a value that is not finite/,
    );
    expect(() => fitLogistic([[1], [2]], [true, false], { l2: 0 })).toThrow(/l2: must be > 0/);
  });
});
