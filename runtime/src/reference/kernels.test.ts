import { describe, expect, it } from "vitest";
import { linear, rmsNormRows, RotaryEmbedding, siluMultiply } from "./kernels.ts";
import { SeededRandom } from "./random-weights.ts";

/** Σ_c x[t, c] · w[r, c] (+ b[r]) with one accumulator, the textbook way. */
function naiveLinear(
  x: Float32Array,
  count: number,
  w: Float32Array,
  inDim: number,
  outDim: number,
  b?: Float32Array,
) {
  const out = new Float64Array(count * outDim);
  for (let t = 0; t < count; t++)
    for (let r = 0; r < outDim; r++) {
      let sum = b ? b[r] : 0;
      for (let c = 0; c < inDim; c++) sum += x[t * inDim + c] * w[r * inDim + c];
      out[t * outDim + r] = sum;
    }
  return out;
}

describe("linear (x Wᵀ for a Hugging Face [out, in] weight)", () => {
  it("computes each output row's dot product with each input row, plus the bias", () => {
    // W = [[1, 2, 3], [4, 5, 6]], x = [[1, 0, -1], [2, 1, 0]], b = [10, 20]
    const w = Float32Array.of(1, 2, 3, 4, 5, 6);
    const x = Float32Array.of(1, 0, -1, 2, 1, 0);
    const out = new Float32Array(4);
    linear(x, 2, w, 3, 2, out);
    expect(Array.from(out)).toEqual([-2, -2, 4, 13]);
    linear(x, 2, w, 3, 2, out, Float32Array.of(10, 20));
    expect(Array.from(out)).toEqual([8, 18, 14, 33]);
    linear(x.subarray(3), 1, w, 3, 2, out);
    expect(Array.from(out.subarray(0, 2))).toEqual([4, 13]);
  });

  it.each([
    [1, 7, 5],
    [2, 8, 6],
    [3, 9, 7],
    [5, 16, 9],
    [8, 33, 12],
  ])(
    "matches a textbook dot product for %i rows, in %i, out %i (odd and even sizes)",
    (count, inDim, outDim) => {
      const random = new SeededRandom(count * 100 + inDim);
      const x = random.normal(count * inDim, 0, 1);
      const w = random.normal(outDim * inDim, 0, 1);
      const b = random.normal(outDim, 0, 1);
      const out = new Float32Array(count * outDim);
      linear(x, count, w, inDim, outDim, out, b);
      const expected = naiveLinear(x, count, w, inDim, outDim, b);
      for (let i = 0; i < out.length; i++) expect(out[i]).toBeCloseTo(expected[i], 5);
    },
  );

  it("gives a row the same bits whether it is computed alone or in a batch", () => {
    const random = new SeededRandom(7);
    const inDim = 37;
    const outDim = 11;
    const count = 5;
    const x = random.normal(count * inDim, 0, 1);
    const w = random.normal(outDim * inDim, 0, 1);
    const b = random.normal(outDim, 0, 1);
    const batch = new Float32Array(count * outDim);
    linear(x, count, w, inDim, outDim, batch, b);
    for (let t = 0; t < count; t++) {
      const alone = new Float32Array(outDim);
      linear(x.subarray(t * inDim, (t + 1) * inDim), 1, w, inDim, outDim, alone, b);
      expect(alone).toEqual(batch.subarray(t * outDim, (t + 1) * outDim));
    }
  });
});

describe("rmsNormRows", () => {
  it("scales a known vector by rsqrt(mean(x²) + eps) and the weight", () => {
    // mean([1, 2, 3, 4]²) = 30 / 4 = 7.5
    const x = Float32Array.of(1, 2, 3, 4);
    const weight = Float32Array.of(1, 0.5, 2, 1);
    const out = new Float32Array(4);
    rmsNormRows(x, 1, 4, weight, 0, out);
    const r = 1 / Math.sqrt(7.5);
    [1 * r, 2 * r * 0.5, 3 * r * 2, 4 * r].forEach((v, i) => expect(out[i]).toBeCloseTo(v, 6));

    rmsNormRows(x, 1, 4, weight, 0.5, out);
    expect(out[0]).toBeCloseTo(1 / Math.sqrt(8), 6);
  });

  it("normalises each row on its own", () => {
    const x = Float32Array.of(3, 4, 0, 0, -2, 0, 0, 0);
    const out = new Float32Array(8);
    rmsNormRows(x, 2, 4, Float32Array.of(1, 1, 1, 1), 0, out);
    // row 0: rms = sqrt(25/4) = 2.5; row 1: rms = sqrt(4/4) = 1
    expect(Array.from(out)).toEqual([1.2, 1.6, 0, 0, -2, 0, 0, 0].map(Math.fround));
  });
});

describe("siluMultiply", () => {
  it("is silu(gate) · up, with silu(x) = x · sigmoid(x)", () => {
    const gate = Float32Array.of(0, 1, -2, 3);
    const up = Float32Array.of(5, 2, 1, -1);
    siluMultiply(gate, up, 4);
    const silu = (v: number) => v / (1 + Math.exp(-v));
    [0, silu(1) * 2, silu(-2), -silu(3)].forEach((v, i) => expect(gate[i]).toBeCloseTo(v, 6));
  });
});

describe("RotaryEmbedding (HF rotate_half)", () => {
  const norm = (v: Float32Array, from: number, to: number) => {
    let sum = 0;
    for (let i = from; i < to; i++) sum += v[i] * v[i];
    return Math.sqrt(sum);
  };

  it("uses inv_freq[i] = 1 / theta^(2i / headDim)", () => {
    const rotary = new RotaryEmbedding(8, 10000);
    expect(Array.from(rotary.inverseFrequency)).toEqual([1, 0.1, 0.01, 0.001].map(Math.fround));
  });

  it("is the identity at position 0", () => {
    const rotary = new RotaryEmbedding(8, 10000);
    const v = new SeededRandom(1).normal(16, 0, 1);
    const rotated = v.slice();
    rotary.apply(rotated, 0, 2, 0);
    expect(rotated).toEqual(v);
  });

  it("rotates dimension i with dimension i + headDim/2 by position · inv_freq[i]", () => {
    const rotary = new RotaryEmbedding(4, 10000); // inv_freq = [1, 0.01]
    const v = Float32Array.of(1, 0, 0, 0, /* head 1 */ 0, 2, 0, 3);
    rotary.apply(v, 0, 2, 5);
    const [c0, s0] = [Math.cos(5), Math.sin(5)];
    const [c1, s1] = [Math.cos(Math.fround(0.05)), Math.sin(Math.fround(0.05))];
    // head 0: (x0, x2) = (1, 0) → (cos, sin); head 1: (x1, x3) = (2, 3) → (2cos − 3sin, 3cos + 2sin)
    const expected = [c0, 0, s0, 0, 0, 2 * c1 - 3 * s1, 0, 3 * c1 + 2 * s1];
    expected.forEach((e, i) => expect(v[i]).toBeCloseTo(e, 6));
  });

  it("preserves each head's norm at any position, and q·k depends only on the distance", () => {
    const rotary = new RotaryEmbedding(16, 10000);
    const random = new SeededRandom(2);
    const q = random.normal(16, 0, 1);
    const k = random.normal(16, 0, 1);
    const dotAt = (pq: number, pk: number) => {
      const a = q.slice();
      const b = k.slice();
      rotary.apply(a, 0, 1, pq);
      rotary.apply(b, 0, 1, pk);
      expect(norm(a, 0, 16)).toBeCloseTo(norm(q, 0, 16), 5);
      return a.reduce((sum, v, i) => sum + v * b[i], 0);
    };
    for (const p of [1, 7, 100, 1000]) dotAt(p, 0);
    expect(dotAt(10, 3)).toBeCloseTo(dotAt(107, 100), 4);
    expect(dotAt(3, 10)).toBeCloseTo(dotAt(500, 507), 4);
  });

  it("rotates each head by the same angles, at an offset", () => {
    const rotary = new RotaryEmbedding(8, 500000);
    const head = new SeededRandom(3).normal(8, 0, 1);
    const v = new Float32Array(3 + 3 * 8);
    for (let h = 0; h < 3; h++) v.set(head, 3 + h * 8);
    rotary.apply(v, 3, 3, 42);
    expect(Array.from(v.subarray(0, 3))).toEqual([0, 0, 0]);
    expect(v.subarray(11, 19)).toEqual(v.subarray(3, 11));
    expect(v.subarray(19, 27)).toEqual(v.subarray(3, 11));
  });
});
