/**
 * int8: symmetric absmax quantization with one scale per token.
 *
 * Wire format: one record of `4 + dim` bytes per token, tokens in order; token t's
 * record starts at byte t·(4 + dim):
 *   +0  scale   float32, little-endian: absmax(token) / 127 rounded *up* (the smallest
 *               float32 s with 127·s ≥ absmax), so no value exceeds 127 steps; 0 for an
 *               all-zero token
 *   +4  values  dim × int8 (two's complement), q_d = round(x_d / scale) ∈ [-127, 127],
 *               ties to even
 * Decoding gives x̂_d = q_d · scale rounded to float32, so |x̂_d − x_d| ≤ scale/2 +
 * |x̂_d|·2^-24 ≤ absmax/254 · (1 + 2^-15) (the scale's rounding-up adds ≤ 2^-23), plus
 * 2^-148 when the scale is a subnormal float32 (absmax < 2^-119).
 * dim + 4 bytes per token: 2052 B at dim 2048 (8.02 bits/value).
 * Encode rejects |x| ≥ 2^126 (hidden states are nowhere near; the limit keeps every
 * decodable value finite). Decode rejects scales that are negative (sign bit set), above
 * 2^120, infinite or NaN. The byte 0x80 (−128) is never produced; decode reads it as −128.
 *
 * Speed: for a dim that is a multiple of 16 (every real hidden size) the per-value loops
 * run in WebAssembly SIMD (wasm/codec-kernels.wat), multiplying in float64 as the
 * JavaScript loops do, so both give the same bytes and values (a test holds them to it);
 * scales are computed in JavaScript either way.
 */
import { CodecError } from "@tandem/common";
import { ROUND, checkHidden, checkPayload, checkShape, rangeError } from "./common.ts";
import type { HiddenStateCodec } from "./hidden-state-codec.ts";
import { pooledFloat32Array, pooledUint8Array } from "./pooled-arrays.ts";
import { align16, codecKernels, SCRATCH_BYTES } from "./wasm/codec-kernels.ts";

/**
 * Range: |x| < 2^126, so scales stay ≤ 2^120 and even a −128 byte times the largest
 * scale decode accepts (2^120) stays a finite float32. Hidden states never come near.
 */
const INT8_LIMIT = 2 ** 126 - 2 ** 102; // the largest float32 below 2^126
const INT8_LIMIT_BITS = 0x7e800000 - 1;
const MAX_SCALE_BITS = 0x7b800000; // 2^120

// Scratch for moving a scale between a number and its 4 wire bytes (no DataView).
const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);
const scratchU8 = new Uint8Array(scratchF32.buffer);

export class Int8Codec implements HiddenStateCodec {
  readonly name = "int8";

  encodedBytes(count: number, dim: number): number {
    checkShape(count, dim);
    return count * (4 + dim);
  }

  private readonly kernels: boolean;

  /**
   * @param options.kernels run the per-value loops in WebAssembly where the shape allows
   *   (false: always JavaScript, for comparing the two). @default true
   */
  constructor(options: { kernels?: boolean } = {}) {
    this.kernels = options.kernels ?? true;
  }

  encode(hidden: Float32Array, count: number, dim: number): Uint8Array {
    checkHidden(hidden, count, dim);
    return this.kernelsFit(dim)
      ? this.encodeWithKernels(hidden, count, dim)
      : this.encodeInJs(hidden, count, dim);
  }

  decode(bytes: Uint8Array, count: number, dim: number): Float32Array {
    checkPayload("int8", bytes, this.encodedBytes(count, dim), count, dim);
    return this.kernelsFit(dim)
      ? this.decodeWithKernels(bytes, count, dim)
      : this.decodeInJs(bytes, count, dim);
  }

  private kernelsFit(dim: number): boolean {
    return this.kernels && dim % 16 === 0;
  }

  private encodeWithKernels(hidden: Float32Array, count: number, dim: number): Uint8Array {
    const kernels = codecKernels();
    const stride = 4 + dim;
    const out = pooledUint8Array(count * stride);
    // Per token in scratch: its floats, absmax bits (4 B), scale (4 B), 1/scale (8 B), its record.
    const tokenScratch = 4 * dim + 16 + stride;
    const chunkTokens = Math.max(1, Math.floor((SCRATCH_BYTES - 48) / tokenScratch));
    for (let t = 0; t < count; t += chunkTokens) {
      const tokens = Math.min(chunkTokens, count - t);
      const srcAt = kernels.scratch(tokens * tokenScratch + 48);
      const absmaxAt = srcAt + 4 * tokens * dim;
      const inversesAt = align16(absmaxAt + 4 * tokens);
      const scalesAt = inversesAt + 8 * tokens;
      const dstAt = align16(scalesAt + 4 * tokens);
      const { buffer, exports } = kernels;
      new Float32Array(buffer, srcAt, tokens * dim).set(hidden.subarray(t * dim, (t + tokens) * dim));
      exports.group_absmax_bits(srcAt, tokens, dim, absmaxAt);
      const maxBits = new Uint32Array(buffer, absmaxAt, tokens);
      const inverses = new Float64Array(buffer, inversesAt, tokens);
      const scales = new Float32Array(buffer, scalesAt, tokens);
      for (let k = 0; k < tokens; k++) {
        const base = (t + k) * dim;
        if (maxBits[k] > INT8_LIMIT_BITS)
          throw rangeError("int8", hidden, dim, base, base + dim, INT8_LIMIT, "int8 holds |x| < 2^126");
        scales[k] = scaleFor(maxBits[k]);
        inverses[k] = scales[k] > 0 ? 1 / scales[k] : 0;
      }
      exports.int8_quantize(srcAt, tokens, dim, scalesAt, inversesAt, dstAt);
      out.set(new Uint8Array(buffer, dstAt, tokens * stride), t * stride);
    }
    return out;
  }

  private decodeWithKernels(bytes: Uint8Array, count: number, dim: number): Float32Array {
    const kernels = codecKernels();
    const stride = 4 + dim;
    for (let t = 0; t < count; t++) checkedScale(bytes, t * stride, t);
    const out = pooledFloat32Array(count * dim);
    const tokenScratch = stride + 4 * dim;
    const chunkTokens = Math.max(1, Math.floor((SCRATCH_BYTES - 16) / tokenScratch));
    for (let t = 0; t < count; t += chunkTokens) {
      const tokens = Math.min(chunkTokens, count - t);
      const srcAt = kernels.scratch(tokens * tokenScratch + 16);
      // Records are 4 + dim bytes: with dim a multiple of 16 every record's values stay
      // 4 bytes past a 16-byte boundary, which unaligned SIMD loads take as they come.
      const dstAt = align16(srcAt + tokens * stride);
      const { buffer, exports } = kernels;
      new Uint8Array(buffer, srcAt, tokens * stride).set(bytes.subarray(t * stride, (t + tokens) * stride));
      exports.int8_dequantize(srcAt, tokens, dim, dstAt);
      out.set(new Float32Array(buffer, dstAt, tokens * dim), t * dim);
    }
    return out;
  }

  private encodeInJs(hidden: Float32Array, count: number, dim: number): Uint8Array {
    const stride = 4 + dim;
    const out = pooledUint8Array(count * stride);
    const q = new Int8Array(out.buffer, out.byteOffset, out.length);
    const bits = new Uint32Array(hidden.buffer, hidden.byteOffset, hidden.length);
    for (let t = 0; t < count; t++) {
      const base = t * dim;
      const end = base + dim;
      // absmax on the bit patterns: |x| orders as its bits do, integer compares are
      // the fastest loop here, and NaN/±∞ (exponent all ones) compare above the limit.
      let maxBits = 0;
      for (let i = base; i < end; i++) {
        const b = bits[i] & 0x7fffffff;
        if (b > maxBits) maxBits = b;
      }
      if (maxBits > INT8_LIMIT_BITS)
        throw rangeError("int8", hidden, dim, base, end, INT8_LIMIT, "int8 holds |x| < 2^126");
      scratchF32[0] = scaleFor(maxBits);
      const scale = scratchF32[0];
      const o = t * stride;
      out[o] = scratchU8[0];
      out[o + 1] = scratchU8[1];
      out[o + 2] = scratchU8[2];
      out[o + 3] = scratchU8[3];
      const inverse = scale > 0 ? 1 / scale : 0;
      for (let i = base, j = o + 4; i < end; i++, j++) q[j] = hidden[i] * inverse + ROUND - ROUND;
    }
    return out;
  }

  private decodeInJs(bytes: Uint8Array, count: number, dim: number): Float32Array {
    const stride = 4 + dim;
    const q = new Int8Array(bytes.buffer, bytes.byteOffset, bytes.length);
    const out = pooledFloat32Array(count * dim);
    for (let t = 0; t < count; t++) {
      const o = t * stride;
      const scale = checkedScale(bytes, o, t);
      for (let i = t * dim, j = o + 4, end = i + dim; i < end; i++, j++) out[i] = q[j] * scale;
    }
    return out;
  }
}

/**
 * The float32 scale of a token from the bits of its absmax (≤ INT8_LIMIT_BITS): absmax /
 * 127 rounded to float32, then up one ulp if that left 127·scale < absmax.
 */
function scaleFor(maxBits: number): number {
  scratchU32[0] = maxBits;
  const absmax = scratchF32[0];
  scratchF32[0] = absmax / 127;
  if (scratchF32[0] * 127 < absmax) scratchU32[0]++; // round up: |x| / scale ≤ 127
  return scratchF32[0];
}

/** Token `t`'s scale, read from its record at `at`; a CodecError when decode must refuse it. */
function checkedScale(bytes: Uint8Array, at: number, t: number): number {
  scratchU8[0] = bytes[at];
  scratchU8[1] = bytes[at + 1];
  scratchU8[2] = bytes[at + 2];
  scratchU8[3] = bytes[at + 3];
  if (scratchU32[0] > MAX_SCALE_BITS)
    throw new CodecError(
      `int8 payload has an invalid scale (fp32 bits 0x${scratchU32[0].toString(16)}: ${scratchF32[0]}) for token ${t}`,
    );
  return scratchF32[0];
}
