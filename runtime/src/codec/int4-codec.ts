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
 *
 * Speed: when groups are whole (G divides dim) and G is a multiple of 16 — the default
 * G = 32 on every real hidden size — the per-value loops run in WebAssembly SIMD
 * (wasm/codec-kernels.wat), which multiplies in float64 as the JavaScript loops do, so
 * both paths give the same bytes and values (a test holds them to it); scales are
 * computed in JavaScript either way. Other shapes take the JavaScript loops.
 */
import { CodecError, InvalidArgumentError } from "@tandem/common";
import { floatToHalfBits } from "../numeric/float16.ts";
import { ROUND, checkHidden, checkPayload, checkShape, rangeError } from "./common.ts";
import type { HiddenStateCodec } from "./hidden-state-codec.ts";
import { pooledFloat32Array, pooledUint8Array } from "./pooled-arrays.ts";
import { align16, codecKernels, SCRATCH_BYTES } from "./wasm/codec-kernels.ts";

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

/**
 * The fp16 bits of a group's scale from the bits of its absmax (≤ INT4_LIMIT_BITS):
 * absmax / 7 rounded to the nearest half, then up one step if that left 7·scale < absmax.
 */
function scaleBitsFor(maxBits: number): number {
  scratchU32[0] = maxBits;
  const absmax = scratchF32[0];
  const scaleBits = floatToHalfBits(absmax / 7);
  return halfScale(scaleBits) * 7 < absmax ? scaleBits + 1 : scaleBits;
}

export class Int4Codec implements HiddenStateCodec {
  readonly name = "int4";
  readonly groupSize: number;

  private readonly kernels: boolean;

  /**
   * @param groupSize values per scale. @default 32
   * @param options.kernels run the per-value loops in WebAssembly where the shape allows
   *   (false: always JavaScript, for comparing the two). @default true
   */
  constructor(groupSize = 32, options: { kernels?: boolean } = {}) {
    if (!Number.isSafeInteger(groupSize) || groupSize < 2 || groupSize % 2 !== 0)
      throw new InvalidArgumentError("groupSize", `must be an even integer ≥ 2, got ${groupSize}`);
    this.groupSize = groupSize;
    this.kernels = options.kernels ?? true;
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
    return this.kernelsFit(dim)
      ? this.encodeWithKernels(hidden, count, dim)
      : this.encodeInJs(hidden, count, dim);
  }

  decode(bytes: Uint8Array, count: number, dim: number): Float32Array {
    checkPayload("int4", bytes, this.encodedBytes(count, dim), count, dim);
    return this.kernelsFit(dim)
      ? this.decodeWithKernels(bytes, count, dim)
      : this.decodeInJs(bytes, count, dim);
  }

  /** Whether the WebAssembly kernels take this shape: whole groups of a multiple of 16. */
  private kernelsFit(dim: number): boolean {
    return this.kernels && dim % this.groupSize === 0 && this.groupSize % 16 === 0;
  }

  private encodeWithKernels(hidden: Float32Array, count: number, dim: number): Uint8Array {
    const kernels = codecKernels();
    const g = this.groupSize;
    const groupsPerToken = dim / g;
    const recordBytes = this.tokenBytes(dim);
    const out = pooledUint8Array(count * recordBytes);
    // Per token in scratch: its floats, and per group the absmax bits (4 B), the scale
    // bits (2 B), 1/scale (8 B); then its record.
    const tokenScratch = 4 * dim + 14 * groupsPerToken + recordBytes;
    const chunkTokens = Math.max(1, Math.floor((SCRATCH_BYTES - 64) / tokenScratch));
    for (let t = 0; t < count; t += chunkTokens) {
      const tokens = Math.min(chunkTokens, count - t);
      const groups = tokens * groupsPerToken;
      const srcAt = kernels.scratch(tokens * tokenScratch + 64);
      const absmaxAt = srcAt + 4 * tokens * dim;
      const inversesAt = align16(absmaxAt + 4 * groups);
      const scalesAt = inversesAt + 8 * groups;
      const dstAt = align16(scalesAt + 2 * groups);
      const { buffer, exports } = kernels;
      new Float32Array(buffer, srcAt, tokens * dim).set(hidden.subarray(t * dim, (t + tokens) * dim));
      exports.group_absmax_bits(srcAt, groups, g, absmaxAt);
      const maxBits = new Uint32Array(buffer, absmaxAt, groups);
      const inverses = new Float64Array(buffer, inversesAt, groups);
      const scales = new Uint16Array(buffer, scalesAt, groups);
      for (let k = 0; k < groups; k++) {
        if (maxBits[k] > INT4_LIMIT_BITS) {
          const start = t * dim + k * g;
          throw rangeError(
            "int4",
            hidden,
            dim,
            start,
            start + g,
            INT4_LIMIT,
            "int4 fp16 scales hold |x| ≤ 458528",
          );
        }
        const scaleBits = scaleBitsFor(maxBits[k]);
        const scale = halfScale(scaleBits);
        scales[k] = scaleBits;
        inverses[k] = scale > 0 ? 1 / scale : 0;
      }
      exports.int4_quantize(srcAt, groups, g, scalesAt, inversesAt, dstAt);
      out.set(new Uint8Array(buffer, dstAt, tokens * recordBytes), t * recordBytes);
    }
    return out;
  }

  private decodeWithKernels(bytes: Uint8Array, count: number, dim: number): Float32Array {
    const kernels = codecKernels();
    const g = this.groupSize;
    const groupsPerToken = dim / g;
    const recordBytes = this.tokenBytes(dim);
    const out = pooledFloat32Array(count * dim);
    const tokenScratch = recordBytes + 4 * dim;
    const chunkTokens = Math.max(1, Math.floor((SCRATCH_BYTES - 16) / tokenScratch));
    for (let t = 0; t < count; t += chunkTokens) {
      const tokens = Math.min(chunkTokens, count - t);
      const srcAt = kernels.scratch(tokens * tokenScratch + 16);
      const dstAt = align16(srcAt + tokens * recordBytes);
      const { buffer, exports } = kernels;
      new Uint8Array(buffer, srcAt, tokens * recordBytes).set(
        bytes.subarray(t * recordBytes, (t + tokens) * recordBytes),
      );
      const bad = exports.int4_dequantize(srcAt, tokens * groupsPerToken, g, dstAt);
      if (bad >= 0) {
        const record = bytes.subarray(t * recordBytes);
        const at = Math.floor(bad / groupsPerToken) * recordBytes + (bad % groupsPerToken) * (2 + g / 2);
        throw invalidScale(
          record[at] | (record[at + 1] << 8),
          t + Math.floor(bad / groupsPerToken),
          bad % groupsPerToken,
        );
      }
      out.set(new Float32Array(buffer, dstAt, tokens * dim), t * dim);
    }
    return out;
  }

  private encodeInJs(hidden: Float32Array, count: number, dim: number): Uint8Array {
    const out = pooledUint8Array(count * this.tokenBytes(dim));
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
        const scaleBits = scaleBitsFor(maxBits);
        const scale = halfScale(scaleBits);
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

  private decodeInJs(bytes: Uint8Array, count: number, dim: number): Float32Array {
    const out = pooledFloat32Array(count * dim);
    const g = this.groupSize;
    let o = 0;
    for (let t = 0; t < count; t++) {
      const tokenEnd = (t + 1) * dim;
      for (let start = t * dim; start < tokenEnd; start += g) {
        const end = Math.min(start + g, tokenEnd);
        const scaleBits = bytes[o] | (bytes[o + 1] << 8);
        if (scaleBits >= 0x7c00) throw invalidScale(scaleBits, t, (start - t * dim) / g);
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

function invalidScale(scaleBits: number, token: number, group: number): CodecError {
  return new CodecError(
    `int4 payload has an invalid scale (fp16 bits 0x${scaleBits.toString(16)}: ` +
      `${scaleBits & 0x8000 ? "negative" : "not finite"}) for token ${token}, group ${group}`,
  );
}
