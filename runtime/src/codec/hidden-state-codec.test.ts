import { describe, expect, it } from "vitest";
import { CodecError, InvalidArgumentError } from "@tandem/common";
import { CODEC_NAMES, getCodec, isCodecName, type HiddenStateCodec } from "./hidden-state-codec.ts";
import { activations } from "./synthetic-activations.ts";

/** Every codec, and int4 also with a group size that does not divide the dims used here. */
const codecs: [string, HiddenStateCodec][] = [
  ...CODEC_NAMES.map((name): [string, HiddenStateCodec] => [name, getCodec(name)]),
  ["int4 (group 10)", getCodec("int4", { groupSize: 10 })],
];

function thrown(run: () => unknown): unknown {
  try {
    run();
  } catch (error) {
    return error;
  }
  throw new Error("expected a throw");
}

describe("getCodec", () => {
  it("builds each named codec", () => {
    for (const name of CODEC_NAMES) expect(getCodec(name).name).toBe(name);
    expect(CODEC_NAMES).toEqual(["fp32", "fp16", "int8", "int4", "int8-rotated", "int4-rotated"]);
    expect(isCodecName("int8")).toBe(true);
    expect(isCodecName("int2")).toBe(false);
  });

  it("rejects an unknown codec with a CodecError naming it", () => {
    const error = thrown(() => getCodec("int2"));
    expect(error).toBeInstanceOf(CodecError);
    expect((error as CodecError).code).toBe("CODEC_INVALID");
    expect((error as Error).message).toMatch(/unknown codec "int2"/);
  });

  it("rejects an int4 group size that is not an even integer ≥ 2, naming the field", () => {
    for (const groupSize of [0, 1, 3, 2.5, -4, NaN]) {
      const error = thrown(() => getCodec("int4", { groupSize }));
      expect(error).toBeInstanceOf(InvalidArgumentError);
      expect((error as InvalidArgumentError).field).toBe("groupSize");
    }
    expect(() => getCodec("int4", { groupSize: 2 })).not.toThrow();
  });

  it("ignores the group size for codecs without groups", () => {
    expect(getCodec("int8", { groupSize: 64 }).encodedBytes(1, 100)).toBe(104);
  });
});

describe.each(codecs)("%s codec: the shared contract", (_label, codec) => {
  const dim = 37;

  it("round-trips a single token and a batch to the same shape", () => {
    for (const count of [1, 5]) {
      const x = activations(count, dim, { seed: count });
      const bytes = codec.encode(x, count, dim);
      expect(bytes.length).toBe(codec.encodedBytes(count, dim));
      const y = codec.decode(bytes, count, dim);
      expect(y).toBeInstanceOf(Float32Array);
      expect(y.length).toBe(count * dim);
    }
  });

  it("encodes all zeros to a payload that decodes to exact zeros", () => {
    const zeros = new Float32Array(3 * dim);
    expect(Array.from(codec.decode(codec.encode(zeros, 3, dim), 3, dim))).toEqual(Array.from(zeros));
  });

  it("is deterministic: same input, same bytes, across instances", () => {
    const x = activations(4, dim, { seed: 9, outlierChannels: 2 });
    const again = getCodec(codec.name, { groupSize: (codec as { groupSize?: number }).groupSize });
    expect(codec.encode(x, 4, dim)).toEqual(codec.encode(x, 4, dim));
    expect(again.encode(x, 4, dim)).toEqual(codec.encode(x, 4, dim));
  });

  it("lays tokens out as independent records: encode(a‖b) = encode(a)‖encode(b)", () => {
    const x = activations(5, dim, { seed: 3, outlierChannels: 1 });
    const whole = codec.encode(x, 5, dim);
    const head = codec.encode(x.slice(0, 2 * dim), 2, dim);
    const tail = codec.encode(x.slice(2 * dim), 3, dim);
    expect(Array.from(whole)).toEqual([...head, ...tail]);
    expect(codec.encodedBytes(5, dim)).toBe(codec.encodedBytes(2, dim) + codec.encodedBytes(3, dim));
  });

  it("encodes a view into a larger array like a copy of it", () => {
    const big = activations(6, dim, { seed: 4 });
    const view = big.subarray(3 * dim, 5 * dim);
    expect(codec.encode(view, 2, dim)).toEqual(codec.encode(view.slice(), 2, dim));
  });

  it("decodes a payload at any byte offset (a view into a network buffer)", () => {
    const x = activations(3, dim, { seed: 5 });
    const bytes = codec.encode(x, 3, dim);
    const expected = codec.decode(bytes, 3, dim);
    for (const offset of [1, 2, 3, 5]) {
      const framed = Buffer.alloc(bytes.length + offset + 3);
      framed.set(bytes, offset);
      expect(codec.decode(framed.subarray(offset, offset + bytes.length), 3, dim)).toEqual(expected);
    }
  });

  it("does not modify its input", () => {
    const x = activations(2, dim, { seed: 6 });
    const copy = x.slice();
    const bytes = codec.encode(x, 2, dim);
    const bytesCopy = bytes.slice();
    codec.decode(bytes, 2, dim);
    expect(x).toEqual(copy);
    expect(bytes).toEqual(bytesCopy);
  });

  it("rejects non-finite values with a CodecError naming the token and dim", () => {
    for (const bad of [NaN, Infinity, -Infinity]) {
      const x = activations(3, dim, { seed: 7 });
      x[2 * dim + 11] = bad;
      const error = thrown(() => codec.encode(x, 3, dim));
      expect(error).toBeInstanceOf(CodecError);
      expect((error as Error).message).toMatch(/token 2, dim 11\b/);
    }
  });

  it("rejects a payload of the wrong size, naming expected and actual sizes", () => {
    const bytes = codec.encode(activations(2, dim), 2, dim);
    const expected = codec.encodedBytes(2, dim);
    for (const wrong of [bytes.subarray(1), new Uint8Array(expected + 1), new Uint8Array(0)]) {
      const error = thrown(() => codec.decode(wrong, 2, dim));
      expect(error).toBeInstanceOf(CodecError);
      expect((error as Error).message).toContain(`must be ${expected} bytes, got ${wrong.length}`);
    }
    // A payload for another shape has another size (here; int4 sizes can coincide for
    // dims that differ by one, as a byte holds two values).
    expect(() => codec.decode(bytes, 2, dim + 2)).toThrow(CodecError);
    expect(() => codec.decode(bytes, 3, dim)).toThrow(CodecError);
  });

  it("requires count and dim to be positive integers, naming the field", () => {
    const x = new Float32Array(8);
    for (const [count, d, field] of [
      [0, 8, "count"],
      [-1, 8, "count"],
      [1.5, 8, "count"],
      [NaN, 8, "count"],
      [1, 0, "dim"],
      [1, 2.5, "dim"],
      [1, Infinity, "dim"],
    ] as const) {
      for (const run of [
        () => codec.encode(x, count, d),
        () => codec.decode(new Uint8Array(8), count, d),
        () => codec.encodedBytes(count, d),
      ]) {
        const error = thrown(run);
        expect(error).toBeInstanceOf(InvalidArgumentError);
        expect((error as InvalidArgumentError).field).toBe(field);
      }
    }
  });

  it("requires hidden to hold exactly count × dim values", () => {
    const error = thrown(() => codec.encode(new Float32Array(10), 2, 4));
    expect(error).toBeInstanceOf(InvalidArgumentError);
    expect((error as InvalidArgumentError).field).toBe("hidden");
    expect((error as Error).message).toMatch(/has 10 values, expected .* = 8/);
  });
});
