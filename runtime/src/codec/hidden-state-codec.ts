/**
 * Hidden states on the wire between edge and cloud (the `payload` of a
 * HiddenStateFrame): `count` tokens × `dim` floats, row-major Float32Array. Six
 * codecs trade bytes for error (CE-CoLLM sends quantized states):
 *
 *   codec  bytes per token                      |x̂ − x| bound
 *   fp32   4·dim                                0 (lossless)
 *   fp16   2·dim                                2^-11·|x| (normal range), 2^-25 below
 *   int8   dim + 4                              absmax(token)/254 · (1 + 2^-15) + 2^-148
 *   int4   dim/2 + 2·dim/G  (G = groupSize)     absmax(group)/14 · (1 + 2^-10) + 2^-25
 *   int8-rotated, int4-rotated: int8's and int4's sizes; their bounds hold for the
 *          rotated state y = H·D·x, and ‖x̂ − x‖₂ = ‖ŷ − y‖₂ (the rotation is orthonormal)
 *
 * Wire formats (all little-endian; byte-exact layouts in each codec's file):
 *   fp32  value (t, d) as float32 at byte 4·(t·dim + d)                 fp32-codec.ts
 *   fp16  value (t, d) as IEEE binary16 at byte 2·(t·dim + d)           fp16-codec.ts
 *   int8  per token: float32 scale, then dim int8                       int8-codec.ts
 *   int4  per token, per group of G values: binary16 scale, then the   int4-codec.ts
 *         values as 4-bit nibbles, two per byte, low nibble first
 *   int8-rotated, int4-rotated  int8's, int4's layout of y = H·D·x     rotated-codec.ts
 * Every format is a sequence of fixed-size per-token records, so the payload of
 * tokens a‖b is encode(a)‖encode(b): the edge may encode a token as soon as it has
 * it and concatenate the queued context later. There is no header: the codec, dim
 * and count travel in the protocol (OpenSession.codec and hidden_size,
 * HiddenStateFrame.count); the int4 group size does not, so both ends must use the
 * same one (the default, 32, unless both are configured alike).
 *
 * Contract of every codec:
 *   - `count` and `dim` must be positive integers (InvalidArgumentError naming the
 *     field); `hidden` must hold exactly count·dim values (InvalidArgumentError).
 *   - encode rejects values it cannot represent — NaN, ±∞, and for fp16 |x| ≥ 65520,
 *     for int8 |x| ≥ 2^126, for int4 |x| > 458528 — with a CodecError naming the token
 *     and dim index.
 *   - decode rejects a payload whose length ≠ encodedBytes(count, dim) (CodecError
 *     naming both sizes), scales that are negative, infinite, NaN or (int8) above 2^120,
 *     and fp32/fp16 values that are not finite: a decoded state is always finite.
 *   - encode is deterministic (same input, same bytes); encode and decode allocate
 *     their output and a few typed-array views, nothing per element; decode accepts
 *     payloads at any byte offset (views into a protobuf message).
 */
import { CodecError } from "@tandem/common";
import { checkHost } from "./common.ts";
import { Fp16Codec } from "./fp16-codec.ts";
import { Fp32Codec } from "./fp32-codec.ts";
import { Int4Codec } from "./int4-codec.ts";
import { Int8Codec } from "./int8-codec.ts";
import { RotatedCodec } from "./rotated-codec.ts";

export const CODEC_NAMES = ["fp32", "fp16", "int8", "int4", "int8-rotated", "int4-rotated"] as const;
export type CodecName = (typeof CODEC_NAMES)[number];

export interface HiddenStateCodec {
  readonly name: CodecName;
  /** Exact payload size for `count` tokens of `dim` values. */
  encodedBytes(count: number, dim: number): number;
  encode(hidden: Float32Array, count: number, dim: number): Uint8Array;
  decode(bytes: Uint8Array, count: number, dim: number): Float32Array;
}

export interface CodecOptions {
  /**
   * int4: values per scale group, an even integer ≥ 2 (InvalidArgumentError otherwise);
   * the other codecs ignore it. Both ends of a stream must agree. @default 32
   */
  groupSize?: number;
}

export const DEFAULT_INT4_GROUP_SIZE = 32;

export function isCodecName(name: string): name is CodecName {
  return (CODEC_NAMES as readonly string[]).includes(name);
}

/** The codec called `name`; unknown names are a CodecError. */
export function getCodec(name: string, options: CodecOptions = {}): HiddenStateCodec {
  checkHost();
  switch (name) {
    case "fp32":
      return new Fp32Codec();
    case "fp16":
      return new Fp16Codec();
    case "int8":
      return new Int8Codec();
    case "int4":
      return new Int4Codec(options.groupSize ?? DEFAULT_INT4_GROUP_SIZE);
    case "int8-rotated":
      return new RotatedCodec("int8-rotated", new Int8Codec());
    case "int4-rotated":
      return new RotatedCodec("int4-rotated", new Int4Codec(options.groupSize ?? DEFAULT_INT4_GROUP_SIZE));
    default:
      throw new CodecError(`unknown codec "${name}" (known: ${CODEC_NAMES.join(", ")})`);
  }
}
