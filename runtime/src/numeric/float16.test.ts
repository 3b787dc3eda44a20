import { describe, expect, it } from "vitest";
import {
  bfloat16ToFloat32,
  float32ToBfloat16,
  float32ToHalf,
  floatToHalfBits,
  halfToFloat32,
} from "./float16.ts";

describe("float16", () => {
  it("round-trips every finite half value exactly", () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const floats = halfToFloat32(all);
    for (let h = 0; h < 65536; h++) {
      const exponent = (h >> 10) & 0x1f;
      if (exponent === 31 && h & 0x3ff) continue; // NaN payloads
      expect(floatToHalfBits(floats[h])).toBe(h);
    }
  });

  it("rounds to nearest even and saturates to infinity", () => {
    expect(floatToHalfBits(1 + 2 ** -11)).toBe(0x3c00); // tie -> even
    expect(floatToHalfBits(1 + 3 * 2 ** -11)).toBe(0x3c02);
    expect(floatToHalfBits(70000)).toBe(0x7c00);
    expect(floatToHalfBits(-70000)).toBe(0xfc00);
    expect(Number.isNaN(halfToFloat32(new Uint16Array([floatToHalfBits(NaN)]))[0])).toBe(true);
  });

  it("keeps relative error within 2^-11 for normal values", () => {
    const values = Float32Array.from({ length: 1000 }, (_, i) => (i - 500) * 0.37 + 0.001);
    const back = halfToFloat32(float32ToHalf(values));
    for (let i = 0; i < values.length; i++) {
      expect(Math.abs(back[i] - values[i])).toBeLessThanOrEqual(Math.abs(values[i]) * 2 ** -11);
    }
  });

  it("converts bfloat16 with round to nearest even", () => {
    const values = new Float32Array([1, -2.5, 3.140625, 1e-3, 65504]);
    const back = bfloat16ToFloat32(float32ToBfloat16(values));
    for (let i = 0; i < values.length; i++) {
      expect(Math.abs(back[i] - values[i])).toBeLessThanOrEqual(Math.abs(values[i]) * 2 ** -8);
    }
    expect(back[0]).toBe(1);
    expect(back[1]).toBe(-2.5);
  });
});
