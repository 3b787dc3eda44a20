import { describe, expect, it } from "vitest";
import { CodecError } from "@tandem/common";
import { halfToFloat32 } from "../numeric/float16.ts";
import { getCodec } from "./hidden-state-codec.ts";
import { INT4_LIMIT, halfScale } from "./int4-codec.ts";
import { activations } from "./synthetic-activations.ts";

/** The stated bound: absmax(group)/14 · (1 + 2^-10) + 2^-25. */
function expectWithinBound(x: Float32Array, y: Float32Array, count: number, dim: number, group: number) {
  for (let t = 0; t < count; t++) {
    for (let g = 0; g < dim; g += group) {
      const from = t * dim + g;
      const to = t * dim + Math.min(dim, g + group);
      let absmax = 0;
      for (let i = from; i < to; i++) absmax = Math.max(absmax, Math.abs(x[i]));
      const bound = (absmax / 14) * (1 + 2 ** -10) + 2 ** -25;
      for (let i = from; i < to; i++) {
        if (!(Math.abs(y[i] - x[i]) <= bound))
          throw new Error(`token ${t}, dim ${i - t * dim}: ${x[i]} → ${y[i]}, bound ${bound}`);
      }
    }
  }
}

/** Bytes per token from the documented layout, computed group by group. */
function layoutBytes(dim: number, group: number): number {
  let bytes = 0;
  for (let g = 0; g < dim; g += group) bytes += 2 + Math.ceil(Math.min(group, dim - g) / 2);
  return bytes;
}

describe("int4 codec", () => {
  it("uses groups of 32 by default: dim/2 + 2·dim/32 bytes per token", () => {
    const codec = getCodec("int4");
    expect(codec.encodedBytes(1, 2048)).toBe(1024 + 128);
    expect(codec.encodedBytes(3, 768)).toBe(3 * (384 + 48));
  });

  it("takes exactly the documented bytes when dim is not a multiple of the group size", () => {
    for (const [dim, group] of [
      [1, 32],
      [31, 32],
      [33, 32],
      [100, 32],
      [7, 2],
      [65, 16],
      [1000, 128],
    ]) {
      const codec = getCodec("int4", { groupSize: group });
      expect(codec.encodedBytes(2, dim)).toBe(2 * layoutBytes(dim, group));
      expect(codec.encode(activations(2, dim), 2, dim).length).toBe(2 * layoutBytes(dim, group));
    }
  });

  it("stores per group a little-endian fp16 scale absmax/7, then nibbles, low nibble first", () => {
    const codec = getCodec("int4", { groupSize: 4 });
    // Group 0: absmax 7 → scale 1 (0x3c00); −3.5 is a tie and rounds to even (−4 = 0xc).
    // Group 1 (the short last group): absmax 14 → scale 2 (0x4000); 14 → 7, −2 → −1 = 0xf.
    const bytes = codec.encode(Float32Array.of(7, -3.5, 0, 1, 14, -2), 1, 6);
    expect(Array.from(bytes)).toEqual([0x00, 0x3c, 0xc7, 0x10, 0x00, 0x40, 0xf7]);
    expect(Array.from(codec.decode(bytes, 1, 6))).toEqual([7, -4, 0, 1, 14, -2]);
    // An odd-length last group pads its last byte's high nibble with 0.
    const odd = codec.encode(Float32Array.of(1, 2, 3, 4, -7), 1, 5);
    expect(Array.from(odd.subarray(4))).toEqual([0x00, 0x3c, 0x09]);
  });

  for (const [count, dim, group] of [
    [8, 768, 32],
    [3, 100, 32],
    [4, 333, 16],
    [2, 257, 128],
    [1, 48, 2],
  ]) {
    it(`keeps |error| ≤ absmax(group)/14 on Gaussian data with outliers (${count}×${dim}, group ${group})`, () => {
      const codec = getCodec("int4", { groupSize: group });
      const x = activations(count, dim, { seed: dim + group, outlierChannels: 3, tokenScaleSpread: 1 });
      expectWithinBound(x, codec.decode(codec.encode(x, count, dim), count, dim), count, dim, group);
    });
  }

  it("uses the full range: each group's largest value maps to ±7, never −8", () => {
    const codec = getCodec("int4");
    const x = activations(2, 64, { seed: 3 });
    const bytes = codec.encode(x, 2, 64);
    for (let group = 0; group < 4; group++) {
      const nibbles = Array.from(bytes.subarray(group * 18 + 2, group * 18 + 18)).flatMap((b) => [
        ((b & 0xf) << 28) >> 28,
        (b << 24) >> 28,
      ]);
      expect(Math.max(...nibbles.map(Math.abs))).toBe(7);
      expect(nibbles).not.toContain(-8);
    }
  });

  it("encodes an all-zero group with scale 0 and keeps other groups intact", () => {
    const codec = getCodec("int4", { groupSize: 8 });
    const x = activations(1, 24, { seed: 6 });
    x.fill(0, 8, 16);
    const bytes = codec.encode(x, 1, 24);
    expect(Array.from(bytes.subarray(6, 12))).toEqual([0, 0, 0, 0, 0, 0]);
    const y = codec.decode(bytes, 1, 24);
    expect(Array.from(y.subarray(8, 16))).toEqual(new Array(8).fill(0));
    expectWithinBound(x, y, 1, 24, 8);
  });

  it("confines a single huge outlier's damage to its own group", () => {
    const codec = getCodec("int4");
    const x = activations(1, 128, { seed: 7 });
    x[40] = 2e4;
    const y = codec.decode(codec.encode(x, 1, 128), 1, 128);
    expectWithinBound(x, y, 1, 128, 32);
    expect(Math.abs(y[40] - 2e4)).toBeLessThanOrEqual(2e4 * 2 ** -10);
    let otherGroupsError = 0;
    for (let i = 64; i < 128; i++) otherGroupsError = Math.max(otherGroupsError, Math.abs(y[i] - x[i]));
    expect(otherGroupsError).toBeLessThan(0.5);
  });

  it("keeps the bound for tiny values (subnormal fp16 scales)", () => {
    const codec = getCodec("int4", { groupSize: 4 });
    const x = Float32Array.of(1e-6, -3e-7, 5e-8, 0, 1e-9, 1e-10, -1e-12, 1e-30);
    expectWithinBound(x, codec.decode(codec.encode(x, 1, 8), 1, 8), 1, 8, 4);
  });

  it("accepts |x| up to 7·65504 and rejects larger values, naming where", () => {
    const codec = getCodec("int4", { groupSize: 4 });
    const x = Float32Array.of(1, 2, 3, INT4_LIMIT, 0, 0, 0, 0);
    expect(codec.decode(codec.encode(x, 1, 8), 1, 8)[3]).toBe(INT4_LIMIT);
    x[6] = -(INT4_LIMIT + 0.5);
    expect(() => codec.encode(x, 2, 4)).toThrow(CodecError);
    expect(() => codec.encode(x, 2, 4)).toThrow(/token 1, dim 2 is out of range/);
  });

  it("rejects a negative, infinite or NaN scale, naming the token and group", () => {
    const codec = getCodec("int4", { groupSize: 4 });
    for (const bits of [0xbc00, 0x8000, 0x7c00, 0x7e00, 0xfc00]) {
      const bytes = codec.encode(activations(2, 6), 2, 6);
      // Token 1 starts at byte 7; its group 1 scale at 7 + 4.
      bytes[11] = bits & 0xff;
      bytes[12] = bits >> 8;
      expect(() => codec.decode(bytes, 2, 6)).toThrow(CodecError);
      expect(() => codec.decode(bytes, 2, 6)).toThrow(/invalid scale .* for token 1, group 1/);
    }
  });

  it("reads every finite non-negative fp16 scale as float16.ts does", () => {
    const bits = new Uint16Array(0x7c00).map((_, i) => i);
    const reference = halfToFloat32(bits);
    for (let h = 0; h < bits.length; h++) {
      if (halfScale(h) !== reference[h]) throw new Error(`half 0x${h.toString(16)}`);
    }
  });
});
