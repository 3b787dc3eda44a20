import { readFileSync } from "node:fs";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { HadamardRotation, rotationBlock, rotationSigns } from "./hadamard-rotation.ts";
import { getCodec, type HiddenStateCodec } from "./hidden-state-codec.ts";
import { Int4Codec, INT4_LIMIT } from "./int4-codec.ts";
import { Int8Codec } from "./int8-codec.ts";
import { pooledFloat32Array, pooledUint8Array } from "./pooled-arrays.ts";
import { activations } from "./synthetic-activations.ts";
// @ts-expect-error: a plain .mjs helper of the generator, without types
import { compileWat } from "./wasm/compile-wat.mjs";
import { CODEC_KERNELS_WASM_BASE64 } from "./wasm/generated/codec-kernels.ts";

/** y = H·D·x by the definition: a dense ±1/√b matrix per block, in float64. */
function denseRotation(x: Float32Array, count: number, dim: number): Float64Array {
  const block = rotationBlock(dim);
  const signs = rotationSigns(dim);
  const y = new Float64Array(count * dim);
  const popcount = (v: number) => v.toString(2).replaceAll("0", "").length;
  for (let t = 0; t < count; t++)
    for (let start = 0; start < dim; start += block)
      for (let i = 0; i < block; i++) {
        let sum = 0;
        for (let j = 0; j < block; j++) {
          // Sylvester's Hadamard matrix: H[i][j] = (−1)^popcount(i & j).
          const h = popcount(i & j) % 2 ? -1 : 1;
          sum += h * signs[start + j] * x[t * dim + start + j];
        }
        y[t * dim + start + i] = sum / Math.sqrt(block);
      }
  return y;
}

/**
 * The kernels' codec and the JavaScript loops' codec give the same bytes for `x`, and the
 * same values (−0 included) when decoding them.
 */
function expectSameAsJavaScript(
  kernels: HiddenStateCodec,
  javascript: HiddenStateCodec,
  x: Float32Array,
  count: number,
  dim: number,
): void {
  const bytes = kernels.encode(x, count, dim);
  expect(bytes).toEqual(javascript.encode(x, count, dim));
  const decoded = kernels.decode(bytes, count, dim);
  const expected = javascript.decode(bytes, count, dim);
  for (let i = 0; i < decoded.length; i++) expect(Object.is(decoded[i], expected[i])).toBe(true);
}

describe("the codec kernels (WebAssembly)", () => {
  it("are what generate-codec-wasm.mjs makes of codec-kernels.wat", async () => {
    // On a difference, rerun `node runtime/src/codec/wasm/generate-codec-wasm.mjs`.
    const source = readFileSync(new URL("./wasm/codec-kernels.wat", import.meta.url), "utf8");
    const binary = (await compileWat(source)) as Uint8Array;
    expect(Buffer.from(binary).toString("base64")).toBe(CODEC_KERNELS_WASM_BASE64);
  });

  it("rotate as the dense Hadamard matrix does, for every block size, and undo it", () => {
    // 2, 6, 37: blocks of 2, 2, 1 (the scalar path); 4, 12: blocks of 4 (no wide stage).
    for (const dim of [2, 6, 37, 4, 12, 8, 96, 256, 2048]) {
      const x = activations(3, dim, { seed: dim, outlierChannels: 1 });
      const rotation = new HadamardRotation(dim);
      const y = rotation.rotate(x, 3);
      const expected = denseRotation(x, 3, dim);
      const scale = Math.max(...expected.map(Math.abs));
      for (let i = 0; i < y.length; i++) expect(Math.abs(y[i] - expected[i])).toBeLessThan(scale * 1e-6);
      const back = rotation.unrotateInPlace(y, 3);
      for (let i = 0; i < x.length; i++) expect(Math.abs(back[i] - x[i])).toBeLessThan(scale * 1e-6);
    }
  });

  it("rotate a frame larger than their scratch in chunks, as token by token", () => {
    // 40 tokens × 2048 floats = 320 KiB: two trips through the 256 KiB scratch.
    const dim = 2048;
    const x = activations(40, dim, { seed: 4, outlierChannels: 6 });
    const rotation = new HadamardRotation(dim);
    const whole = rotation.rotate(x, 40);
    for (const t of [0, 31, 32, 39])
      expect(whole.subarray(t * dim, (t + 1) * dim)).toEqual(
        rotation.rotate(x.subarray(t * dim, (t + 1) * dim), 1),
      );
  });

  it("give int4 the JavaScript loops' bytes and values, ties and extremes included", () => {
    const value = fc.oneof(
      fc.float({ noNaN: true, noDefaultInfinity: true, min: -1000, max: 1000 }),
      // Exact halves of a step: ties, rounded to even by both paths.
      fc.integer({ min: -15, max: 15 }).map((k) => k / 2),
      fc.constantFrom(0, -0, 2 ** -30, -(2 ** -140), INT4_LIMIT, -INT4_LIMIT),
    );
    const shape = fc
      .record({
        groupSize: fc.constantFrom(16, 32, 64, 128),
        groups: fc.integer({ min: 1, max: 4 }),
        count: fc.integer({ min: 1, max: 3 }),
      })
      .chain(({ groupSize, groups, count }) =>
        fc.record({
          groupSize: fc.constant(groupSize),
          dim: fc.constant(groupSize * groups),
          count: fc.constant(count),
          values: fc.array(value, {
            minLength: groupSize * groups * count,
            maxLength: groupSize * groups * count,
          }),
        }),
      );
    fc.assert(
      fc.property(shape, ({ groupSize, dim, count, values }) =>
        expectSameAsJavaScript(
          new Int4Codec(groupSize),
          new Int4Codec(groupSize, { kernels: false }),
          Float32Array.from(values),
          count,
          dim,
        ),
      ),
      { numRuns: 300 },
    );
  });

  it("give int4 the same bytes for a frame larger than their scratch", () => {
    const dim = 2048;
    const x = activations(40, dim, { seed: 9, outlierChannels: 6, tokenScaleSpread: 0.5 });
    expectSameAsJavaScript(new Int4Codec(32), new Int4Codec(32, { kernels: false }), x, 40, dim);
  });

  it("give int8 the JavaScript loops' bytes and values, ties and extremes included", () => {
    const value = fc.oneof(
      fc.float({ noNaN: true, noDefaultInfinity: true, min: -1e6, max: 1e6 }),
      fc.integer({ min: -255, max: 255 }).map((k) => k / 2),
      fc.constantFrom(0, -0, 2 ** -130, -(2 ** -140), 2 ** 125, -(2 ** 125)),
    );
    const shape = fc
      .record({ vectors: fc.integer({ min: 1, max: 8 }), count: fc.integer({ min: 1, max: 3 }) })
      .chain(({ vectors, count }) =>
        fc.record({
          dim: fc.constant(16 * vectors),
          count: fc.constant(count),
          values: fc.array(value, { minLength: 16 * vectors * count, maxLength: 16 * vectors * count }),
        }),
      );
    fc.assert(
      fc.property(shape, ({ dim, count, values }) =>
        expectSameAsJavaScript(
          new Int8Codec(),
          new Int8Codec({ kernels: false }),
          Float32Array.from(values),
          count,
          dim,
        ),
      ),
      { numRuns: 300 },
    );
  });

  it("give int8 the same bytes and values for a frame larger than their scratch", () => {
    const dim = 2048;
    const x = activations(40, dim, { seed: 10, outlierChannels: 6, tokenScaleSpread: 0.5 });
    expectSameAsJavaScript(new Int8Codec(), new Int8Codec({ kernels: false }), x, 40, dim);
  });

  it("name the token and group of an invalid int4 scale past the first chunk", () => {
    const dim = 2048;
    const codec = getCodec("int4");
    const bytes = codec.encode(activations(40, dim), 40, dim);
    const at = 35 * codec.encodedBytes(1, dim) + 5 * 18; // token 35, group 5
    bytes[at + 1] = 0x7c; // +∞
    expect(() => codec.decode(bytes, 40, dim)).toThrow(/not finite\) for token 35, group 5/);
  });
});

describe("pooled codec outputs", () => {
  it("are zeroed, fresh views that never overlap", () => {
    const arrays = [
      pooledUint8Array(1152),
      pooledFloat32Array(2048),
      pooledUint8Array(3),
      pooledFloat32Array(5000),
    ];
    for (const a of arrays) expect(a.every((v) => v === 0)).toBe(true);
    arrays.forEach((a) => a.fill(1));
    const spans = arrays.map((a) => [a.buffer, a.byteOffset, a.byteOffset + a.byteLength] as const);
    for (const [i, [buffer, from, to]] of spans.entries())
      for (const [other, start, end] of spans.slice(i + 1))
        if (other === buffer) expect(to <= start || end <= from).toBe(true);
  });
});
