import { describe, expect, it } from "vitest";
import { RidgeAccumulator } from "./ridge-regression.ts";

function seeded(seed: number): () => number {
  let state = seed;
  return () => ((state = (state * 1664525 + 1013904223) >>> 0) + 0.5) / 2 ** 32 - 0.5;
}

describe("RidgeAccumulator", () => {
  it("recovers a linear map and bias from noiseless data", () => {
    const dim = 6;
    const random = seeded(3);
    const map = Float32Array.from({ length: dim * dim }, random);
    const bias = Float32Array.from({ length: dim }, random);
    const rows = 200;
    const x = Float32Array.from({ length: rows * dim }, random);
    const y = new Float32Array(rows * dim);
    for (let r = 0; r < rows; r++) {
      for (let j = 0; j < dim; j++) {
        let sum = bias[j];
        for (let i = 0; i < dim; i++) sum += x[r * dim + i] * map[i * dim + j];
        y[r * dim + j] = sum;
      }
    }
    const accumulator = new RidgeAccumulator(dim);
    accumulator.add(x.subarray(0, 100 * dim), y.subarray(0, 100 * dim), 100);
    accumulator.add(x.subarray(100 * dim), y.subarray(100 * dim), 100);
    const fitted = accumulator.solve(1e-9);
    fitted.weight.forEach((w, i) => expect(w).toBeCloseTo(map[i], 4));
    fitted.bias.forEach((b, i) => expect(b).toBeCloseTo(bias[i], 4));
  });

  it("shrinks the map towards zero as the ridge grows", () => {
    const dim = 4;
    const random = seeded(7);
    const x = Float32Array.from({ length: 50 * dim }, random);
    const y = Float32Array.from(x, (v) => 2 * v);
    const accumulator = new RidgeAccumulator(dim);
    accumulator.add(x, y, 50);
    const norm = (w: Float32Array) => Math.sqrt(w.reduce((s, v) => s + v * v, 0));
    expect(norm(accumulator.solve(10).weight)).toBeLessThan(norm(accumulator.solve(1e-6).weight));
  });

  it("refuses to fit with too few rows", () => {
    const accumulator = new RidgeAccumulator(8);
    accumulator.add(new Float32Array(8 * 4), new Float32Array(8 * 4), 4);
    expect(() => accumulator.solve(1e-3)).toThrow(/need more than 8 rows/);
  });
});
