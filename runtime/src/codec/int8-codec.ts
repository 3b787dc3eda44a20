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
 */
import { CodecError } from "@tandem/common";
import { ROUND, checkHidden, checkPayload, checkShape, rangeError } from "./common.ts";
import type { HiddenStateCodec } from "./hidden-state-codec.ts";
import { pooledFloat32Array, pooledUint8Array } from "./pooled-arrays.ts";

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

  encode(hidden: Float32Array, count: number, dim: number): Uint8Array {
    checkHidden(hidden, count, dim);
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
      scratchU32[0] = maxBits;
      const absmax = scratchF32[0];
      scratchF32[0] = absmax / 127;
      if (scratchF32[0] * 127 < absmax) scratchU32[0]++; // round up: |x| / scale ≤ 127
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

  decode(bytes: Uint8Array, count: number, dim: number): Float32Array {
    checkPayload("int8", bytes, this.encodedBytes(count, dim), count, dim);
    const stride = 4 + dim;
    const q = new Int8Array(bytes.buffer, bytes.byteOffset, bytes.length);
    const out = pooledFloat32Array(count * dim);
    for (let t = 0; t < count; t++) {
      const o = t * stride;
      scratchU8[0] = bytes[o];
      scratchU8[1] = bytes[o + 1];
      scratchU8[2] = bytes[o + 2];
      scratchU8[3] = bytes[o + 3];
      if (scratchU32[0] > MAX_SCALE_BITS)
        throw new CodecError(
          `int8 payload has an invalid scale (fp32 bits 0x${scratchU32[0].toString(16)}: ${scratchF32[0]}) for token ${t}`,
        );
      const scale = scratchF32[0];
      for (let i = t * dim, j = o + 4, end = i + dim; i < end; i++, j++) out[i] = q[j] * scale;
    }
    return out;
  }
}
