import { describe, expect, it } from "vitest";
import { CodecError } from "@tandem/common";
import { getCodec } from "./hidden-state-codec.ts";
import { activations } from "./synthetic-activations.ts";

describe("fp32 codec", () => {
  const codec = getCodec("fp32");

  it("takes 4 bytes per value", () => {
    expect(codec.encodedBytes(1, 1)).toBe(4);
    expect(codec.encodedBytes(3, 2048)).toBe(3 * 2048 * 4);
  });

  it("stores each value as a little-endian float32, token-major", () => {
    const bytes = codec.encode(Float32Array.of(1, -2, 0.5, 2 ** -149), 2, 2);
    expect(Array.from(bytes)).toEqual([0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0, 0, 0, 0, 0x3f, 1, 0, 0, 0]);
  });

  it("round-trips exactly: Gaussian data, outliers, subnormals, extremes, a single token", () => {
    const x = activations(7, 300, { outlierChannels: 5, tokenScaleSpread: 1 });
    expect(codec.decode(codec.encode(x, 7, 300), 7, 300)).toEqual(x);
    const edge = Float32Array.of(3.4028234663852886e38, -3.4028234663852886e38, 2 ** -149, 1e-40, 0, 1e6);
    expect(codec.decode(codec.encode(edge, 1, edge.length), 1, edge.length)).toEqual(edge);
  });

  it("rejects a payload holding a non-finite value, naming where", () => {
    const bytes = codec.encode(activations(2, 8), 2, 8);
    new Float32Array(bytes.buffer, bytes.byteOffset, 16)[8 + 3] = NaN;
    expect(() => codec.decode(bytes, 2, 8)).toThrow(CodecError);
    expect(() => codec.decode(bytes, 2, 8)).toThrow(/token 1, dim 3/);
  });
});
