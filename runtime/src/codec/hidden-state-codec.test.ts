import { describe, expect, it } from "vitest";
import { CodecError, InvalidArgumentError } from "../errors.ts";
import { CODEC_NAMES, getCodec } from "./hidden-state-codec.ts";

/** Hidden-state-like data: Gaussian values with a few large outlier channels, seeded. */
function activations(count: number, dim: number, seed = 1): Float32Array {
  let state = seed;
  const uniform = () => ((state = (state * 1664525 + 1013904223) >>> 0) + 0.5) / 2 ** 32;
  const out = new Float32Array(count * dim);
  for (let i = 0; i < out.length; i++) {
    const g = Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
    out[i] = i % dim === 7 ? g * 40 : g;
  }
  return out;
}

function absmax(values: Float32Array, from: number, to: number): number {
  let max = 0;
  for (let i = from; i < to; i++) max = Math.max(max, Math.abs(values[i]));
  return max;
}

describe("hidden-state codecs", () => {
  it("fp32 round-trips exactly", () => {
    const codec = getCodec("fp32");
    const x = activations(3, 64);
    expect(codec.decode(codec.encode(x, 3, 64), 3, 64)).toEqual(x);
    expect(codec.encodedBytes(3, 64)).toBe(3 * 64 * 4);
  });

  it("fp16 keeps relative error within 2^-11", () => {
    const codec = getCodec("fp16");
    const x = activations(4, 96);
    const y = codec.decode(codec.encode(x, 4, 96), 4, 96);
    x.forEach((v, i) => expect(Math.abs(y[i] - v)).toBeLessThanOrEqual(Math.abs(v) * 2 ** -11 + 1e-7));
    expect(codec.encodedBytes(4, 96)).toBe(4 * 96 * 2);
  });

  it("int8 keeps each token within absmax/254 and costs dim + 4 bytes per token", () => {
    const codec = getCodec("int8");
    const dim = 100;
    const x = activations(5, dim);
    const y = codec.decode(codec.encode(x, 5, dim), 5, dim);
    for (let t = 0; t < 5; t++) {
      const bound = absmax(x, t * dim, (t + 1) * dim) / 254 + 1e-6;
      for (let i = t * dim; i < (t + 1) * dim; i++)
        expect(Math.abs(y[i] - x[i])).toBeLessThanOrEqual(bound * 1.0001);
    }
    expect(codec.encodedBytes(5, dim)).toBe(5 * (dim + 4));
  });

  for (const [dim, groupSize] of [
    [128, 32],
    [100, 32],
    [33, 8],
  ] as const) {
    it(`int4 keeps each group within absmax/14 (dim ${dim}, group ${groupSize})`, () => {
      const codec = getCodec("int4", { groupSize });
      const x = activations(3, dim, 5);
      const bytes = codec.encode(x, 3, dim);
      const y = codec.decode(bytes, 3, dim);
      for (let t = 0; t < 3; t++) {
        for (let g = 0; g < dim; g += groupSize) {
          const from = t * dim + g;
          const to = t * dim + Math.min(dim, g + groupSize);
          const bound = (absmax(x, from, to) / 14) * (1 + 2 ** -10) + 1e-6;
          for (let i = from; i < to; i++) expect(Math.abs(y[i] - x[i])).toBeLessThanOrEqual(bound);
        }
      }
      const groups = Math.ceil(dim / groupSize);
      const fullGroups = Math.floor(dim / groupSize);
      const rest = dim % groupSize;
      expect(bytes.length).toBe(
        3 * (fullGroups * (2 + groupSize / 2) + (rest ? 2 + Math.ceil(rest / 2) : 0)),
      );
      expect(groups).toBeGreaterThan(0);
    });
  }

  it("encodes zeros, a single token and a lone outlier faithfully", () => {
    for (const name of CODEC_NAMES) {
      const codec = getCodec(name);
      const zeros = new Float32Array(40);
      expect(Array.from(codec.decode(codec.encode(zeros, 1, 40), 1, 40))).toEqual(Array.from(zeros));
      const outlier = new Float32Array(40);
      outlier[3] = 1000;
      const back = codec.decode(codec.encode(outlier, 1, 40), 1, 40);
      expect(back[3]).toBeCloseTo(1000, -1);
      expect(back[4]).toBe(0);
    }
  });

  it("is deterministic", () => {
    for (const name of CODEC_NAMES) {
      const x = activations(2, 64);
      expect(getCodec(name).encode(x, 2, 64)).toEqual(getCodec(name).encode(x, 2, 64));
    }
  });

  it("decodes from an unaligned network buffer", () => {
    for (const name of CODEC_NAMES) {
      const codec = getCodec(name);
      const x = activations(2, 64);
      const encoded = codec.encode(x, 2, 64);
      const framed = new Uint8Array(encoded.length + 1);
      framed.set(encoded, 1);
      expect(codec.decode(framed.subarray(1), 2, 64)).toEqual(codec.decode(encoded, 2, 64));
    }
  });
});

describe("malformed input", () => {
  it("rejects a payload of the wrong size, naming both sizes", () => {
    for (const name of CODEC_NAMES) {
      const codec = getCodec(name);
      const bytes = codec.encode(activations(2, 64), 2, 64);
      expect(() => codec.decode(bytes.subarray(1), 2, 64)).toThrow(
        new RegExp(`must be ${bytes.length} bytes, got ${bytes.length - 1}`),
      );
    }
  });

  it("rejects non-finite inputs, naming the token and dimension", () => {
    const x = activations(2, 16);
    x[16 + 5] = NaN;
    expect(() => getCodec("int8").encode(x, 2, 16)).toThrow(/token 1, dim 5/);
  });

  it("rejects invalid scales and non-finite values inside a payload", () => {
    const int8 = getCodec("int8");
    const bytes = int8.encode(activations(1, 16), 1, 16);
    new DataView(bytes.buffer).setFloat32(0, -1, true);
    expect(() => int8.decode(bytes, 1, 16)).toThrow(CodecError);
    const fp16 = getCodec("fp16");
    const half = fp16.encode(activations(1, 16), 1, 16);
    half[1] = 0x7c;
    half[0] = 0;
    expect(() => fp16.decode(half, 1, 16)).toThrow(/non-finite/);
  });

  it("rejects unknown codecs and bad shapes with named errors", () => {
    expect(() => getCodec("int2")).toThrow(/unknown codec "int2"/);
    expect(() => getCodec("fp16").encode(new Float32Array(4), 0, 4)).toThrow(InvalidArgumentError);
    expect(() => getCodec("fp16").encode(new Float32Array(4), 1, 5)).toThrow(/expected 1 × 5/);
  });
});
