/**
 * Hidden states on the wire between edge and cloud: `count` tokens × `dim` floats,
 * row-major. Four codecs trade bytes for error (CE-CoLLM sends quantized states):
 *
 *   fp32  count·dim little-endian float32                                   4·dim B/token
 *   fp16  count·dim little-endian IEEE half, round to nearest even          2·dim B/token
 *   int8  per token: float32 scale (absmax/127), then dim int8 values       dim + 4 B/token
 *   int4  per token and group of `groupSize` values: an fp16 scale
 *         (absmax/7), then the group's values in [-7, 7] as 4-bit two's
 *         complement nibbles, even index in the low nibble; a group of odd
 *         length pads its last byte                                         ≈ dim/2 + 2·dim/groupSize B/token
 *
 * int4 scales are fp16: at group size 32 an fp32 scale would add 2 of every 18 bytes
 * per group where fp16 adds 1, and fp16's 2^-11 relative precision is far below the
 * 1/14 quantization step. Decoding checks sizes and scales, so a corrupt frame is
 * rejected rather than turned into garbage states.
 */
import { CodecError, InvalidArgumentError } from "../errors.ts";
import { float32ToHalf, floatToHalfBits, halfToFloat32 } from "../numeric/float16.ts";

export type CodecName = "fp32" | "fp16" | "int8" | "int4";

export const CODEC_NAMES: readonly CodecName[] = ["fp32", "fp16", "int8", "int4"];

export interface HiddenStateCodec {
  readonly name: CodecName;
  encodedBytes(count: number, dim: number): number;
  encode(hidden: Float32Array, count: number, dim: number): Uint8Array;
  decode(bytes: Uint8Array, count: number, dim: number): Float32Array;
}

export interface CodecOptions {
  /** Values per int4 scale group. @default 32 */
  groupSize?: number;
}

export function getCodec(name: string, options: CodecOptions = {}): HiddenStateCodec {
  switch (name) {
    case "fp32":
      return new Fp32Codec();
    case "fp16":
      return new Fp16Codec();
    case "int8":
      return new Int8Codec();
    case "int4":
      return new Int4Codec(options.groupSize ?? 32);
    default:
      throw new CodecError(`unknown codec "${name}" (known: ${CODEC_NAMES.join(", ")})`);
  }
}

function checkShape(count: number, dim: number): void {
  if (!Number.isInteger(count) || count < 1)
    throw new InvalidArgumentError("count", `must be a positive integer, got ${count}`);
  if (!Number.isInteger(dim) || dim < 1)
    throw new InvalidArgumentError("dim", `must be a positive integer, got ${dim}`);
}

function checkInput(hidden: Float32Array, count: number, dim: number): void {
  checkShape(count, dim);
  if (hidden.length !== count * dim)
    throw new CodecError(`hidden has ${hidden.length} values, expected ${count} × ${dim}`);
  for (let i = 0; i < hidden.length; i++) {
    if (!Number.isFinite(hidden[i])) {
      throw new CodecError(
        `hidden state is not finite at token ${Math.floor(i / dim)}, dim ${i % dim} (${hidden[i]})`,
      );
    }
  }
}

function checkPayload(codec: HiddenStateCodec, bytes: Uint8Array, count: number, dim: number): void {
  checkShape(count, dim);
  const expected = codec.encodedBytes(count, dim);
  if (bytes.length !== expected) {
    throw new CodecError(
      `${codec.name} payload for ${count} × ${dim} must be ${expected} bytes, got ${bytes.length}`,
    );
  }
}

/** An aligned copy when `bytes` does not start on a multiple of `alignment` (network buffers often do not). */
function aligned(bytes: Uint8Array, alignment: number): Uint8Array {
  if (bytes.byteOffset % alignment === 0) return bytes;
  return new Uint8Array(bytes);
}

class Fp32Codec implements HiddenStateCodec {
  readonly name = "fp32";
  encodedBytes(count: number, dim: number): number {
    return count * dim * 4;
  }
  encode(hidden: Float32Array, count: number, dim: number): Uint8Array {
    checkInput(hidden, count, dim);
    return new Uint8Array(hidden.slice().buffer);
  }
  decode(bytes: Uint8Array, count: number, dim: number): Float32Array {
    checkPayload(this, bytes, count, dim);
    const source = aligned(bytes, 4);
    const values = new Float32Array(source.buffer, source.byteOffset, count * dim).slice();
    for (let i = 0; i < values.length; i++) {
      if (!Number.isFinite(values[i]))
        throw new CodecError(
          `fp32 payload holds a non-finite value at token ${Math.floor(i / dim)}, dim ${i % dim}`,
        );
    }
    return values;
  }
}

class Fp16Codec implements HiddenStateCodec {
  readonly name = "fp16";
  encodedBytes(count: number, dim: number): number {
    return count * dim * 2;
  }
  encode(hidden: Float32Array, count: number, dim: number): Uint8Array {
    checkInput(hidden, count, dim);
    return new Uint8Array(float32ToHalf(hidden).buffer);
  }
  decode(bytes: Uint8Array, count: number, dim: number): Float32Array {
    checkPayload(this, bytes, count, dim);
    const source = aligned(bytes, 2);
    const halves = new Uint16Array(source.buffer, source.byteOffset, count * dim);
    for (let i = 0; i < halves.length; i++) {
      if ((halves[i] & 0x7c00) === 0x7c00)
        throw new CodecError(
          `fp16 payload holds a non-finite value at token ${Math.floor(i / dim)}, dim ${i % dim}`,
        );
    }
    return halfToFloat32(halves);
  }
}

class Int8Codec implements HiddenStateCodec {
  readonly name = "int8";
  encodedBytes(count: number, dim: number): number {
    return count * (4 + dim);
  }
  encode(hidden: Float32Array, count: number, dim: number): Uint8Array {
    checkInput(hidden, count, dim);
    const out = new Uint8Array(this.encodedBytes(count, dim));
    const view = new DataView(out.buffer);
    const values = new Int8Array(out.buffer);
    for (let t = 0; t < count; t++) {
      const base = t * dim;
      let absmax = 0;
      for (let i = 0; i < dim; i++) absmax = Math.max(absmax, Math.abs(hidden[base + i]));
      const scale = absmax / 127;
      const offset = t * (4 + dim);
      view.setFloat32(offset, scale, true);
      // Quantize against the fp32-rounded scale the decoder will see.
      const stored = view.getFloat32(offset, true);
      const inverse = stored > 0 ? 1 / stored : 0;
      for (let i = 0; i < dim; i++)
        values[offset + 4 + i] = Math.max(-127, Math.min(127, Math.round(hidden[base + i] * inverse)));
    }
    return out;
  }
  decode(bytes: Uint8Array, count: number, dim: number): Float32Array {
    checkPayload(this, bytes, count, dim);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const values = new Int8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const out = new Float32Array(count * dim);
    for (let t = 0; t < count; t++) {
      const offset = t * (4 + dim);
      const scale = view.getFloat32(offset, true);
      if (!Number.isFinite(scale) || scale < 0)
        throw new CodecError(`int8 payload has an invalid scale ${scale} for token ${t}`);
      for (let i = 0; i < dim; i++) out[t * dim + i] = values[offset + 4 + i] * scale;
    }
    return out;
  }
}

class Int4Codec implements HiddenStateCodec {
  readonly name = "int4";
  constructor(readonly groupSize: number) {
    if (!Number.isInteger(groupSize) || groupSize < 2)
      throw new InvalidArgumentError("groupSize", `must be an integer ≥ 2, got ${groupSize}`);
  }
  /** Bytes of one token: per group a 2-byte scale plus ceil(length/2) bytes of nibbles. */
  private tokenBytes(dim: number): number {
    const full = Math.floor(dim / this.groupSize);
    const rest = dim % this.groupSize;
    return full * (2 + Math.ceil(this.groupSize / 2)) + (rest > 0 ? 2 + Math.ceil(rest / 2) : 0);
  }
  encodedBytes(count: number, dim: number): number {
    return count * this.tokenBytes(dim);
  }
  encode(hidden: Float32Array, count: number, dim: number): Uint8Array {
    checkInput(hidden, count, dim);
    const out = new Uint8Array(this.encodedBytes(count, dim));
    const scaleTable = halfToFloat32(new Uint16Array(1));
    let offset = 0;
    for (let t = 0; t < count; t++) {
      for (let g = 0; g < dim; g += this.groupSize) {
        const base = t * dim + g;
        const length = Math.min(this.groupSize, dim - g);
        let absmax = 0;
        for (let i = 0; i < length; i++) absmax = Math.max(absmax, Math.abs(hidden[base + i]));
        // Round the scale up to the next fp16 so no value exceeds ±7 steps after rounding.
        let bits = floatToHalfBits(absmax / 7);
        halfToFloat32(Uint16Array.of(bits), scaleTable);
        if (scaleTable[0] * 7 < absmax) bits++;
        halfToFloat32(Uint16Array.of(bits), scaleTable);
        const scale = scaleTable[0];
        out[offset] = bits & 0xff;
        out[offset + 1] = bits >> 8;
        offset += 2;
        const inverse = scale > 0 ? 1 / scale : 0;
        for (let i = 0; i < length; i += 2) {
          const low = Math.max(-7, Math.min(7, Math.round(hidden[base + i] * inverse))) & 0xf;
          const high =
            i + 1 < length ? Math.max(-7, Math.min(7, Math.round(hidden[base + i + 1] * inverse))) & 0xf : 0;
          out[offset++] = low | (high << 4);
        }
      }
    }
    return out;
  }
  decode(bytes: Uint8Array, count: number, dim: number): Float32Array {
    checkPayload(this, bytes, count, dim);
    const out = new Float32Array(count * dim);
    const scaleBits = new Uint16Array(1);
    const scale = new Float32Array(1);
    let offset = 0;
    for (let t = 0; t < count; t++) {
      for (let g = 0; g < dim; g += this.groupSize) {
        const base = t * dim + g;
        const length = Math.min(this.groupSize, dim - g);
        scaleBits[0] = bytes[offset] | (bytes[offset + 1] << 8);
        halfToFloat32(scaleBits, scale);
        if (!Number.isFinite(scale[0]) || scale[0] < 0)
          throw new CodecError(
            `int4 payload has an invalid scale ${scale[0]} for token ${t}, group ${g / this.groupSize}`,
          );
        offset += 2;
        for (let i = 0; i < length; i += 2) {
          const byte = bytes[offset++];
          out[base + i] = (((byte & 0xf) << 28) >> 28) * scale[0];
          if (i + 1 < length) out[base + i + 1] = ((byte << 24) >> 28) * scale[0];
        }
      }
    }
    return out;
  }
}
