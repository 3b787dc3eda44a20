import { describe, expect, it } from "vitest";
import { CodecError } from "@tandem/common";
import { floatToHalfBits, halfToFloat32 } from "../numeric/float16.ts";
import { getCodec } from "./hidden-state-codec.ts";
import { activations } from "./synthetic-activations.ts";

describe("fp16 codec", () => {
  const codec = getCodec("fp16");

  it("takes 2 bytes per value", () => {
    expect(codec.encodedBytes(1, 1)).toBe(2);
    expect(codec.encodedBytes(3, 2048)).toBe(3 * 2048 * 2);
  });

  it("stores each value as little-endian IEEE half bits, token-major", () => {
    const bytes = codec.encode(Float32Array.of(1, -2, 65504, 2 ** -24), 1, 4);
    expect(Array.from(bytes)).toEqual([0x00, 0x3c, 0x00, 0xc0, 0xff, 0x7b, 0x01, 0x00]);
  });

  it("rounds exactly as float16.ts does (nearest even) over a sweep of all fp32 bit patterns in range", () => {
    const patterns: number[] = [];
    for (let a = 0; a < 0x477ff000; a += 4093) patterns.push(a, a | 0x80000000);
    // Exact ties between two halves, around the normal/subnormal boundary and the top.
    for (let a = 0x38000000; a < 0x477ff000; a += 0x3ffe000) patterns.push(a | 0x1000, (a | 0x1000) + 0x2000);
    for (let a = 0x38780000; a < 0x38880000; a += 17) patterns.push(a);
    patterns.push(0x477fefff, 0x33000000, 0x33000001, 0x80000000);
    const x = new Float32Array(new Uint32Array(patterns).buffer);
    const encoded = codec.encode(x, 1, x.length);
    const halves = new Uint16Array(encoded.buffer, encoded.byteOffset, x.length);
    for (let i = 0; i < x.length; i++) {
      if (halves[i] !== floatToHalfBits(x[i]))
        throw new Error(`fp32 bits 0x${patterns[i].toString(16)}: ${halves[i]} ≠ ${floatToHalfBits(x[i])}`);
    }
  });

  it("keeps |error| ≤ 2^-11·|x| in the normal range and ≤ 2^-25 below it", () => {
    const x = activations(16, 256, { outlierChannels: 4, outlierScale: 50, tokenScaleSpread: 1.5 });
    x[5] = 2 ** -14;
    x[6] = 3e-5;
    x[7] = -1e-7;
    x[8] = 65504;
    x[9] = -65519.99;
    const y = codec.decode(codec.encode(x, 16, 256), 16, 256);
    for (let i = 0; i < x.length; i++) {
      const bound = Math.abs(x[i]) >= 2 ** -14 ? 2 ** -11 * Math.abs(x[i]) : 2 ** -25;
      if (!(Math.abs(y[i] - x[i]) <= bound)) throw new Error(`value ${i}: ${x[i]} → ${y[i]}`);
    }
  });

  it("keeps a single huge outlier in range to 2^-11 relative and leaves its neighbours alone", () => {
    const x = activations(1, 64, { seed: 2 });
    x[10] = 60000;
    const y = codec.decode(codec.encode(x, 1, 64), 1, 64);
    expect(Math.abs(y[10] - 60000)).toBeLessThanOrEqual(60000 * 2 ** -11);
    expect(Math.abs(y[11] - x[11])).toBeLessThanOrEqual(Math.abs(x[11]) * 2 ** -11);
  });

  it("rejects values that would round to infinity (|x| ≥ 65520), naming where", () => {
    for (const v of [65520, -65520, 1e6]) {
      const x = new Float32Array(2 * 4);
      x[4 + 2] = v;
      expect(() => codec.encode(x, 2, 4)).toThrow(CodecError);
      expect(() => codec.encode(x, 2, 4)).toThrow(/token 1, dim 2 is out of range/);
    }
    const ok = codec.decode(codec.encode(Float32Array.of(65519.99, -65519.99), 1, 2), 1, 2);
    expect(Array.from(ok)).toEqual([65504, -65504]);
  });

  it("rejects a payload holding an infinity or NaN, naming where", () => {
    for (const bits of [0x7c00, 0xfc00, 0x7e00]) {
      const bytes = codec.encode(new Float32Array(6), 2, 3);
      new Uint16Array(bytes.buffer, bytes.byteOffset, 6)[3 + 1] = bits;
      expect(() => codec.decode(bytes, 2, 3)).toThrow(CodecError);
      expect(() => codec.decode(bytes, 2, 3)).toThrow(/non-finite value at token 1, dim 1/);
    }
  });

  it("decodes every finite half bit pattern as float16.ts does", () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const finite = all.filter((h) => (h & 0x7c00) !== 0x7c00);
    const bytes = new Uint8Array(finite.buffer);
    expect(codec.decode(bytes, 1, finite.length)).toEqual(halfToFloat32(finite));
  });
});
