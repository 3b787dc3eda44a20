/**
 * int4: symmetric absmax quantization with one scale per group of `groupSize`
 * consecutive values of a token (default 32; `dim` need not be a multiple: the last
 * group of each token is then shorter).
 *
 * Wire format: one record per token, tokens in order, each `tokenBytes(dim)` bytes:
 * for each group g = 0, 1, … (values g·G … min(dim, (g+1)·G) − 1, length L):
 *   +0  scale   binary16 (IEEE half), little-endian: absmax(group) / 7 rounded *up*
 *               (the smallest half s with 7·s ≥ absmax), so no value exceeds 7 steps;
 *               0 for an all-zero group
 *   +2  values  ⌈L/2⌉ bytes; value k of the group is the low nibble of byte k/2 when k
 *               is even, the high nibble when odd; each nibble is 4-bit two's
 *               complement q = round(x / scale) ∈ [-7, 7], ties to even; when
 *               L is odd (only possible for the last group) the last high nibble is 0
 * So a token takes ⌊dim/G⌋·(2 + G/2) + (r > 0 ? 2 + ⌈r/2⌉ : 0) bytes, r = dim mod G:
 * dim/2 + 2·dim/G when G divides dim (1152 B for dim 2048, G 32, 4.5 bits/value).
 * Decoding gives x̂ = q · scale, so |x̂ − x| ≤ scale/2 ≤ absmax/14 · (1 + 2^-10) + 2^-25
 * (the factor is the half's rounding-up; 2^-25 is half the smallest subnormal scale).
 *
 * Why fp16 scales: at G = 32 a group is 16 bytes of nibbles; an fp16 scale makes it 18
 * bytes (4.5 bits/value, 1152 B/token at dim 2048), an fp32 scale 20 bytes (5 bits/
 * value, 1280 B/token): fp32 would cost 11% more per token for precision (2^-24) that
 * the 1/14-of-absmax quantization step cannot use; the half's 2^-11 relative rounding
 * adds at most 0.1% to the error bound. The price is range: the group absmax must be
 * ≤ 7 · 65504 = 458528 — encode rejects larger values (real hidden states, even their
 * "massive activation" channels, stay orders of magnitude below; fp32 handles the rest).
 *
 * Decode rejects scales with the sign bit set, infinite or NaN (bits ≥ 0x7c00). The
 * nibble 0x8 (−8) is never produced; decode reads it as −8.
 */
import { CodecError, InvalidArgumentError } from "@tandem/common";
import { floatToHalfBits } from "../numeric/float16.ts";
import { ROUND, checkHidden, checkPayload, checkShape, rangeError } from "./common.ts";
import type { HiddenStateCodec } from "./hidden-state-codec.ts";

/** The largest group absmax whose scale (absmax / 7) fits an fp16: 7 · 65504. */
export const INT4_LIMIT = 7 * 65504;

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);
scratchF32[0] = INT4_LIMIT; // exact in fp32
const INT4_LIMIT_BITS = scratchU32[0];

/** 2^(e − 25) for the 31 finite half exponents e. */
const HALF_POW2 = Float64Array.from({ length: 31 }, (_, e) => 2 ** (e - 25));

/**
 * The value of finite, non-negative half bits (< 0x7c00): a per-group call, so two
 * multiplications beat a trip through the 64 K-entry table of float16.ts.
 */
export function halfScale(bits: number): number {
  const e = bits >>> 10;
  const m = bits & 0x3ff;
  return e === 0 ? m * 2 ** -24 : (m + 1024) * HALF_POW2[e];
}

export class Int4Codec implements HiddenStateCodec {
  readonly name = "int4";
  readonly groupSize: number;

  constructor(groupSize = 32) {
    if (!Number.isSafeInteger(groupSize) || groupSize < 2 || groupSize % 2 !== 0)
      throw new InvalidArgumentError("groupSize", `must be an even integer ≥ 2, got ${groupSize}`);
    this.groupSize = groupSize;
  }

  /** Bytes of one token's record. */
  tokenBytes(dim: number): number {
    const g = this.groupSize;
    const rest = dim % g;
    return Math.floor(dim / g) * (2 + g / 2) + (rest > 0 ? 2 + Math.ceil(rest / 2) : 0);
  }

  encodedBytes(count: number, dim: number): number {
    checkShape(count, dim);
    return count * this.tokenBytes(dim);
  }

  encode(hidden: Float32Array, count: number, dim: number): Uint8Array {
    checkHidden(hidden, count, dim);
    const out = new Uint8Array(count * this.tokenBytes(dim));
    const bits = new Uint32Array(hidden.buffer, hidden.byteOffset, hidden.length);
    const g = this.groupSize;
    let o = 0;
    for (let t = 0; t < count; t++) {
      const tokenEnd = (t + 1) * dim;
      for (let start = t * dim; start < tokenEnd; start += g) {
        const end = Math.min(start + g, tokenEnd);
        // absmax on the bit patterns (|x| orders as its bits do); NaN and ±∞ compare
        // above the limit, so one test catches them too.
        let maxBits = 0;
        for (let i = start; i < end; i++) {
          const b = bits[i] & 0x7fffffff;
          if (b > maxBits) maxBits = b;
        }
        if (maxBits > INT4_LIMIT_BITS)
          throw rangeError("int4", hidden, dim, start, end, INT4_LIMIT, "int4 fp16 scales hold |x| ≤ 458528");
        scratchU32[0] = maxBits;
        const absmax = scratchF32[0];
        let scaleBits = floatToHalfBits(absmax / 7);
        let scale = halfScale(scaleBits);
        if (scale * 7 < absmax) scale = halfScale(++scaleBits); // round up: |x| / scale ≤ 7
        out[o] = scaleBits & 0xff;
        out[o + 1] = scaleBits >>> 8;
        o += 2;
        const inverse = scale > 0 ? 1 / scale : 0;
        let i = start;
        for (; i + 1 < end; i += 2) {
          const low = hidden[i] * inverse + ROUND - ROUND;
          const high = hidden[i + 1] * inverse + ROUND - ROUND;
          out[o++] = (low & 0xf) | ((high & 0xf) << 4);
        }
        if (i < end) out[o++] = (hidden[i] * inverse + ROUND - ROUND) & 0xf;
      }
    }
    return out;
  }

  decode(bytes: Uint8Array, count: number, dim: number): Float32Array {
    checkPayload("int4", bytes, this.encodedBytes(count, dim), count, dim);
    const out = new Float32Array(count * dim);
    const g = this.groupSize;
    let o = 0;
    for (let t = 0; t < count; t++) {
      const tokenEnd = (t + 1) * dim;
      for (let start = t * dim; start < tokenEnd; start += g) {
        const end = Math.min(start + g, tokenEnd);
        const scaleBits = bytes[o] | (bytes[o + 1] << 8);
        if (scaleBits >= 0x7c00)
          throw new CodecError(
            `int4 payload has an invalid scale (fp16 bits 0x${scaleBits.toString(16)}: ` +
              `${scaleBits & 0x8000 ? "negative" : "not finite"}) for token ${t}, group ${(start - t * dim) / g}`,
          );
        const scale = halfScale(scaleBits);
        o += 2;
        let i = start;
        for (; i + 1 < end; i += 2) {
          const byte = bytes[o++];
          // Shift a nibble to the top of an int32 and back down: sign extension.
          out[i] = ((byte << 28) >> 28) * scale;
          out[i + 1] = ((byte << 24) >> 28) * scale;
        }
        if (i < end) out[i] = ((bytes[o++] << 28) >> 28) * scale;
      }
    }
    return out;
  }
}
