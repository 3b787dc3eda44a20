import { describe, expect, it } from "vitest";
import { dequantizeNBits, quantizeNBits } from "./nbits-quantizer.ts";

/** The 4-bit level (0..15) of element `index` of a quantized weight's blocks. */
function level4(packed: Uint8Array, index: number): number {
  return (packed[index >> 1] >> ((index & 1) * 4)) & 0xf;
}

/** Deterministic values in (−1, 1). */
function values(count: number, seed: number): Float32Array {
  const out = new Float32Array(count);
  let state = seed;
  for (let i = 0; i < count; i++) {
    state = (state * 1103515245 + 12345) % 2 ** 31;
    out[i] = (state / 2 ** 30 - 1) * 0.999;
  }
  return out;
}

describe("quantizeNBits: 4 bits, all 16 levels as ggml's Q4_0", () => {
  it("maps the block's largest-magnitude value to level −8 exactly, whichever its sign", () => {
    for (const extreme of [0.8, -0.8]) {
      const weight = Float32Array.from([0.1, extreme, -0.3, 0.05, ...new Array<number>(28).fill(0.2)]);
      const q = quantizeNBits(weight, 1, 32, 4, 32);
      expect(q.scales[0]).toBeCloseTo(extreme / -8, 7);
      expect(level4(q.packed, 1)).toBe(0);
      expect(dequantizeNBits(q)[1]).toBeCloseTo(extreme, 6);
    }
  });

  it("uses levels 0 to 15 on a block spread over both signs, and errs by at most half a step", () => {
    const weight = Float32Array.from({ length: 32 }, (_, i) => -1 + (2 * i) / 31);
    const q = quantizeNBits(weight, 1, 32, 4, 32);
    const levels = Array.from({ length: 32 }, (_, i) => level4(q.packed, i));
    expect(Math.min(...levels)).toBe(0);
    expect(Math.max(...levels)).toBe(15);
    const step = Math.abs(q.scales[0]);
    expect(step).toBeCloseTo(1 / 8, 6);
    const restored = dequantizeNBits(q);
    // Only the opposite extreme (+1 here, beyond 7/8) is clipped: by one step at most.
    weight.forEach((value, i) =>
      expect(Math.abs(restored[i] - value)).toBeLessThanOrEqual(
        value > 7 / 8 ? step + 1e-6 : step / 2 + 1e-6,
      ),
    );
  });

  it("is finer than a symmetric 15-level grid: mean error 7/8 as large on random weights", () => {
    const weight = values(64 * 256, 7);
    const q = quantizeNBits(weight, 64, 256, 4, 32);
    const restored = dequantizeNBits(q);
    let error = 0;
    let symmetricError = 0;
    for (let block = 0; block < weight.length / 32; block++) {
      const slice = weight.subarray(block * 32, block * 32 + 32);
      const absmax = Math.max(...slice.map(Math.abs));
      slice.forEach((value, i) => {
        error += Math.abs(restored[block * 32 + i] - value);
        symmetricError += Math.abs(Math.round((value / absmax) * 7) * (absmax / 7) - value);
      });
    }
    expect(error / symmetricError).toBeGreaterThan(0.8);
    expect(error / symmetricError).toBeLessThan(0.95);
  });

  it("pads a row's last block with the zero level, and an all-zero block has scale 0", () => {
    const weight = new Float32Array(40);
    weight.set([0.5, -0.25], 32);
    const q = quantizeNBits(weight, 1, 40, 4, 32);
    expect(q.scales[0]).toBe(0);
    // The second block holds 8 values and 24 of padding, all at the zero point (8).
    for (let i = 10; i < 32; i++) expect(level4(q.packed.subarray(16), i)).toBe(8);
    expect(Array.from(dequantizeNBits(q).subarray(32, 34))).toEqual([0.5, -0.25]);
  });
});

describe("quantizeNBits: 8 bits, symmetric as ggml's Q8_0", () => {
  it("scales by absmax / 127, keeps every level in [1, 255] and errs by at most half a step", () => {
    const weight = values(8 * 96, 3);
    const q = quantizeNBits(weight, 8, 96, 8, 32);
    const restored = dequantizeNBits(q);
    for (let block = 0; block < q.scales.length; block++) {
      const slice = weight.subarray(block * 32, block * 32 + 32);
      const absmax = Math.max(...slice.map(Math.abs));
      expect(q.scales[block]).toBeCloseTo(absmax / 127, 7);
      slice.forEach((value, i) =>
        expect(Math.abs(restored[block * 32 + i] - value)).toBeLessThanOrEqual(q.scales[block] / 2 + 1e-7),
      );
    }
    expect(Math.min(...q.packed)).toBeGreaterThanOrEqual(1);
    expect(Math.max(...q.packed)).toBeLessThanOrEqual(255);
  });
});
