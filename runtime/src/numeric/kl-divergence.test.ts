import { describe, expect, it } from "vitest";
import { klDivergenceRows } from "./kl-divergence.ts";

describe("KL divergence of softmax rows", () => {
  it("is zero between equal distributions, whatever constant the logits are shifted by", () => {
    const p = Float32Array.from([1, 2, 3, 0.5, 0.5, 0.5]);
    const q = Float32Array.from([11, 12, 13, -4, -4, -4]);
    expect(Array.from(klDivergenceRows(p, q, 3))).toEqual([expect.closeTo(0, 12), expect.closeTo(0, 12)]);
  });

  it("is Σ p·log(p/q), row by row", () => {
    // Rows of two values: softmax([log 3, 0]) = [3/4, 1/4], softmax([0, 0]) = [1/2, 1/2].
    const p = Float32Array.from([Math.log(3), 0, 0, 0]);
    const q = Float32Array.from([0, 0, Math.log(3), 0]);
    const expected = 0.75 * Math.log(0.75 / 0.5) + 0.25 * Math.log(0.25 / 0.5);
    const reverse = 0.5 * Math.log(0.5 / 0.75) + 0.5 * Math.log(0.5 / 0.25);
    const kl = klDivergenceRows(p, q, 2);
    expect(kl[0]).toBeCloseTo(expected, 6);
    expect(kl[1]).toBeCloseTo(reverse, 6);
  });

  it("refuses logits that are not rows of the width", () => {
    expect(() => klDivergenceRows(new Float32Array(4), new Float32Array(6), 2)).toThrow(RangeError);
    expect(() => klDivergenceRows(new Float32Array(5), new Float32Array(5), 2)).toThrow(/rows of 2/);
  });
});
