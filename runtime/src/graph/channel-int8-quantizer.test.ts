import { describe, expect, it } from "vitest";
import {
  channelInt8Weight,
  dequantizeChannelInt8,
  W8A8_WEIGHT_MAX_LEVEL,
  quantizeChannelRows,
} from "./channel-int8-quantizer.ts";
import { activations } from "../codec/synthetic-activations.ts";

/** Deterministic Gaussian weights. */
const values = (count: number, seed: number) => activations(1, count, { seed });

describe("quantizeChannelRows: int8 per output channel, transposed for MatMul", () => {
  it("stores W[r][c] at [c][r], each row's absmax at ±63 (7 bits: no int16 saturation in MLAS's AVX2 kernel), and errs by at most half a step", () => {
    const rows = 5;
    const cols = 7;
    const weight = values(rows * cols, 3);
    // Rows of very different magnitudes: each keeps its own scale.
    for (let c = 0; c < cols; c++) weight[2 * cols + c] *= 1000;
    const q = channelInt8Weight(rows, cols);
    quantizeChannelRows(q, 0, weight);
    for (let r = 0; r < rows; r++) {
      const row = weight.subarray(r * cols, (r + 1) * cols);
      const absmax = Math.max(...Array.from(row, Math.abs));
      expect(q.scales[r]).toBe(Math.fround(absmax / W8A8_WEIGHT_MAX_LEVEL));
      const extreme = Array.from(row, Math.abs).indexOf(absmax);
      expect(Math.abs(q.transposed[extreme * rows + r])).toBe(W8A8_WEIGHT_MAX_LEVEL);
    }
    const restored = dequantizeChannelInt8(q);
    weight.forEach((value, i) => {
      const scale = q.scales[Math.floor(i / cols)];
      expect(Math.abs(restored[i] - value)).toBeLessThanOrEqual(scale / 2 + 1e-6 * Math.abs(value));
    });
  });

  it("fills the same weight a block of rows at a time as all at once", () => {
    const rows = 9;
    const cols = 4;
    const weight = values(rows * cols, 11);
    const whole = channelInt8Weight(rows, cols);
    quantizeChannelRows(whole, 0, weight);
    const blocks = channelInt8Weight(rows, cols);
    for (const [begin, end] of [
      [0, 4],
      [4, 5],
      [5, 9],
    ])
      quantizeChannelRows(blocks, begin, weight.subarray(begin * cols, end * cols));
    expect(blocks.transposed).toEqual(whole.transposed);
    expect(blocks.scales).toEqual(whole.scales);
  });

  it("gives an all-zero row a zero scale and zero levels", () => {
    const q = channelInt8Weight(2, 3);
    quantizeChannelRows(q, 0, Float32Array.from([0, 0, 0, 1, -2, 3]));
    expect(q.scales[0]).toBe(0);
    expect([q.transposed[0], q.transposed[2], q.transposed[4]]).toEqual([0, 0, 0]);
    expect(Array.from(dequantizeChannelInt8(q))).toEqual([
      0,
      0,
      0,
      expect.closeTo(1, 1),
      expect.closeTo(-2, 1),
      expect.closeTo(3, 5),
    ]);
  });
});
