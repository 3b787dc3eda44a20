import { describe, expect, it } from "vitest";
import { CodecError } from "@tandem/common";
import { getCodec } from "./hidden-state-codec.ts";
import { activations } from "./synthetic-activations.ts";

const codec = getCodec("int8");

/** The stated bound: absmax/254 · (1 + 2^-15), plus 2^-148 for subnormal scales. */
function expectWithinBound(x: Float32Array, y: Float32Array, count: number, dim: number): void {
  for (let t = 0; t < count; t++) {
    let absmax = 0;
    for (let d = 0; d < dim; d++) absmax = Math.max(absmax, Math.abs(x[t * dim + d]));
    const bound = (absmax / 254) * (1 + 2 ** -15) + 2 ** -148;
    for (let d = 0; d < dim; d++) {
      const i = t * dim + d;
      if (!(Math.abs(y[i] - x[i]) <= bound))
        throw new Error(`token ${t}, dim ${d}: ${x[i]} → ${y[i]}, bound ${bound}`);
    }
  }
}

function scales(bytes: Uint8Array, count: number, dim: number): number[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return Array.from({ length: count }, (_, t) => view.getFloat32(t * (4 + dim), true));
}

describe("int8 codec", () => {
  it("takes dim + 4 bytes per token", () => {
    expect(codec.encodedBytes(1, 1)).toBe(5);
    expect(codec.encodedBytes(3, 2048)).toBe(3 * 2052);
  });

  it("stores per token a little-endian float32 scale absmax/127, then dim int8 values", () => {
    // absmax 127 → scale 1; −63.5 is a tie and rounds to even (−64).
    const bytes = codec.encode(Float32Array.of(127, -63.5, 0, 1, 0, 0, 0, -2.54), 2, 4);
    expect(Array.from(bytes.subarray(0, 8))).toEqual([0, 0, 0x80, 0x3f, 127, 0xc0, 0, 1]);
    // Second token: absmax 2.54 → scale 0.02 (rounded up to a float32), values 0, 0, 0, −127.
    expect(scales(bytes, 2, 4)[1]).toBeCloseTo(0.02, 7);
    expect(Array.from(bytes.subarray(12, 16))).toEqual([0, 0, 0, 0x81]);
  });

  it("keeps |error| ≤ absmax(token)/254 on Gaussian data with outlier channels", () => {
    for (const [count, dim] of [
      [1, 64],
      [8, 768],
      [3, 333],
    ]) {
      const x = activations(count, dim, { seed: dim, outlierChannels: 3, tokenScaleSpread: 1 });
      const bytes = codec.encode(x, count, dim);
      expectWithinBound(x, codec.decode(bytes, count, dim), count, dim);
    }
  });

  it("uses the full range: each token's largest value maps to ±127", () => {
    const x = activations(4, 100, { seed: 8 });
    const encoded = codec.encode(x, 4, 100);
    const q = new Int8Array(encoded.buffer, encoded.byteOffset, encoded.length);
    for (let t = 0; t < 4; t++) {
      const values = Array.from(q.subarray(t * 104 + 4, (t + 1) * 104));
      expect(Math.max(...values.map(Math.abs))).toBe(127);
      expect(values).not.toContain(-128);
    }
  });

  it("encodes an all-zero token with scale 0, decoding to zeros, next to normal tokens", () => {
    const x = activations(3, 16, { seed: 4 });
    x.fill(0, 16, 32);
    const bytes = codec.encode(x, 3, 16);
    expect(scales(bytes, 3, 16)[1]).toBe(0);
    expect(Array.from(bytes.subarray(20, 40))).toEqual(new Array(20).fill(0));
    const y = codec.decode(bytes, 3, 16);
    expect(Array.from(y.subarray(16, 32))).toEqual(new Array(16).fill(0));
    expectWithinBound(x, y, 3, 16);
  });

  it("keeps the bound with a single huge outlier (the rest of its token collapses toward 0)", () => {
    const x = activations(2, 256, { seed: 5 });
    x[256 + 100] = -3e4;
    const y = codec.decode(codec.encode(x, 2, 256), 2, 256);
    expectWithinBound(x, y, 2, 256);
    expect(y[256 + 100]).toBeCloseTo(-3e4, 1);
    // The first token is unaffected by the second's outlier.
    expect(Math.abs(y[0] - x[0])).toBeLessThan(0.05);
  });

  it("accepts |x| < 2^126 and rejects larger values, naming where", () => {
    const largest = 2 ** 126 - 2 ** 102;
    const x = Float32Array.of(largest, -largest);
    expectWithinBound(x, codec.decode(codec.encode(x, 1, 2), 1, 2), 1, 2);
    for (const v of [2 ** 126, -3.4e38]) {
      const x = new Float32Array(8);
      x[4 + 1] = v;
      expect(() => codec.encode(x, 2, 4)).toThrow(CodecError);
      expect(() => codec.encode(x, 2, 4)).toThrow(/token 1, dim 1 is out of range/);
    }
  });

  it("never wraps around at the extremes: huge and subnormal absmax", () => {
    const x = Float32Array.of(8e37, -8e37, 1, 0, 1e-40, -1e-40, 3e-41, 0, 2 ** -149, 0, 0, 0);
    const y = codec.decode(codec.encode(x, 3, 4), 3, 4);
    expectWithinBound(x, y, 3, 4);
    expect(Math.sign(y[4])).toBe(1);
    expect(Math.sign(y[5])).toBe(-1);
  });

  it("never exceeds ±127 whatever the absmax: a sweep of subnormal and normal magnitudes", () => {
    const magnitudes: number[] = [];
    for (let k = 1; k <= 4096; k++) magnitudes.push(k * 2 ** -149);
    for (let e = -126; e <= 125; e++) magnitudes.push(2 ** e * 1.3759, 2 ** e * 1.9999999);
    const x = new Float32Array(magnitudes.flatMap((m) => [m, -m, m / 3]));
    const count = magnitudes.length;
    const bytes = codec.encode(x, count, 3);
    const y = codec.decode(bytes, count, 3);
    for (let t = 0; t < count; t++) {
      const [high, low] = new Int8Array(bytes.buffer, t * 7 + 4, 2);
      // 127 steps once the scale is a normal float32; fewer (coarser) for tiny subnormals.
      expect(high === 127 || (magnitudes[t] < 2 ** -119 && high > 0 && high < 127)).toBe(true);
      expect(low).toBe(-high);
    }
    expectWithinBound(x, y, count, 3);
  });

  it("decodes the largest accepted scale (2^120) with a −128 byte to a finite value", () => {
    const bytes = Uint8Array.of(0, 0, 0, 0, 0x80);
    new DataView(bytes.buffer).setFloat32(0, 2 ** 120, true);
    expect(codec.decode(bytes, 1, 1)[0]).toBe(-(2 ** 127));
  });

  it("rejects a negative, infinite, NaN or too large scale, naming the token", () => {
    for (const scale of [-1, -0, Infinity, NaN, 2 ** 121]) {
      const bytes = codec.encode(activations(2, 16), 2, 16);
      new DataView(bytes.buffer, bytes.byteOffset).setFloat32(20, scale, true);
      expect(() => codec.decode(bytes, 2, 16)).toThrow(CodecError);
      expect(() => codec.decode(bytes, 2, 16)).toThrow(/invalid scale .* for token 1/);
    }
  });
});
