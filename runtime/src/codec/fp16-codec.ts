/**
 * fp16: IEEE 754 binary16, round to nearest even. Wire format: `count · dim`
 * little-endian binary16 bit patterns, token-major (value (t, d) at byte
 * 2·(t·dim + d)); 2·dim bytes per token. Relative error ≤ 2^-11 for |x| in the normal
 * range [2^-14, 65504]; below it the absolute error is ≤ 2^-25.
 *
 * Encode rejects |x| ≥ 65520 (they would round to infinity) rather than saturating:
 * a silently clipped state is worse than an error the caller can act on (send fp32).
 * Decode rejects infinities and NaNs, which encode never produces.
 */
import { CodecError } from "@tandem/common";
import { floatToHalfBits, halfToFloat32 } from "../numeric/float16.ts";
import { alignedBytes, checkHidden, checkPayload, checkShape, rangeError } from "./common.ts";
import type { HiddenStateCodec } from "./hidden-state-codec.ts";
import { pooledFloat32Array, pooledUint8Array } from "./pooled-arrays.ts";

/** The largest fp32 below 65520, the midpoint between fp16's largest finite 65504 and the next step. */
const FP16_LIMIT = 65520 - 2 ** -8;
/** fp32 bits of 65520: at or above this, a value rounds to fp16 infinity (or is not finite). */
const OVERFLOW_BITS = 0x477ff000;
/** fp32 bits of 2^-14, the smallest normal fp16. */
const MIN_NORMAL_BITS = 0x38800000;
/**
 * Rebias fp32 → fp16 (subtract (127 − 15) << 23) and add 0xfff, the rounding bias
 * that, with the kept mantissa's lowest bit added, rounds the dropped 13 bits to
 * nearest even: 0x38000000 − 0xfff.
 */
const REBIAS_ROUND = 0x37fff001;

export class Fp16Codec implements HiddenStateCodec {
  readonly name = "fp16";

  encodedBytes(count: number, dim: number): number {
    checkShape(count, dim);
    return count * dim * 2;
  }

  encode(hidden: Float32Array, count: number, dim: number): Uint8Array {
    checkHidden(hidden, count, dim);
    const n = count * dim;
    const bytes = pooledUint8Array(2 * n);
    const out = new Uint16Array(bytes.buffer, bytes.byteOffset, n);
    const bits = new Uint32Array(hidden.buffer, hidden.byteOffset, n);
    for (let i = 0; i < n; i++) {
      const x = bits[i];
      const a = x & 0x7fffffff;
      if (a >= MIN_NORMAL_BITS) {
        if (a >= OVERFLOW_BITS)
          throw rangeError("fp16", hidden, dim, i, n, FP16_LIMIT, "fp16 holds |x| < 65520");
        out[i] = ((x >>> 16) & 0x8000) | ((a - REBIAS_ROUND + ((a >>> 13) & 1)) >>> 13);
      } else {
        // ±0 (common: padding, zeroed tokens) is the top half of its bits; subnormal
        // fp16 results are rare enough for the general conversion.
        out[i] = a === 0 ? x >>> 16 : floatToHalfBits(hidden[i]);
      }
    }
    return bytes;
  }

  decode(bytes: Uint8Array, count: number, dim: number): Float32Array {
    checkPayload("fp16", bytes, this.encodedBytes(count, dim), count, dim);
    const n = count * dim;
    const source = alignedBytes(bytes, 2);
    const halves = new Uint16Array(source.buffer, source.byteOffset, n);
    for (let i = 0; i < n; i++) {
      if ((halves[i] & 0x7c00) === 0x7c00)
        throw new CodecError(
          `fp16 payload holds a non-finite value at token ${Math.floor(i / dim)}, dim ${i % dim}`,
        );
    }
    return halfToFloat32(halves, pooledFloat32Array(n));
  }
}
