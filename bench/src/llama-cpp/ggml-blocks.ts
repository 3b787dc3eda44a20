/**
 * The ggml tensor encodings Tandem writes into GGUF files, bit for bit as ggml's reference
 * quantizers (`quantize_row_q8_0_ref`, `quantize_row_q4_0_ref` in ggml-quants.c) make them,
 * so a file written here holds the same bytes `llama-quantize` would write from the same
 * fp32 weights.
 *
 * Each row is cut into blocks of 32 values (a row's length must be a multiple of 32):
 *
 *   F32   4 bytes a value, little-endian.
 *   Q8_0  34 bytes a block: fp16 scale d = amax / 127, then 32 int8 q = round(x / d)
 *         (rounded half away from zero); x ≈ q·d, error ≤ d / 2.
 *   Q4_0  18 bytes a block: fp16 scale d = max / -8, where max is the signed value of
 *         largest magnitude (the first one on a tie), then 16 bytes of 4-bit
 *         q = min(15, trunc(x / d + 8.5)): byte j holds element j in its low nibble and
 *         element j + 16 in its high nibble; x ≈ (q - 8)·d. The extreme value maps to
 *         q = 0 exactly, and the other side reaches 7·|d| before it clips.
 *
 * The arithmetic runs in fp32 as the C code does (Math.fround after every operation):
 * scale, reciprocal, product and sum are each rounded to fp32, and the fp16 scale is the
 * round-to-nearest-even conversion of the fp32 one, while the quants are computed from the
 * fp32 reciprocal (not from the rounded fp16 scale), as ggml does.
 */
import { floatToHalfBits } from "@tandem/runtime/testing";

/** ggml's type ids (enum ggml_type) for the encodings written here. */
export const GGML_TYPE = { F32: 0, Q4_0: 2, Q8_0: 8 } as const;
export type GgmlTypeName = keyof typeof GGML_TYPE;

/** Values per block of the quantized types. */
export const QUANT_BLOCK = 32;

const BLOCK_BYTES: Record<GgmlTypeName, number> = { F32: 4, Q8_0: 34, Q4_0: 18 };
const BLOCK_VALUES: Record<GgmlTypeName, number> = { F32: 1, Q8_0: QUANT_BLOCK, Q4_0: QUANT_BLOCK };

/** Whether rows of `rowLength` values can be stored as `type`. */
export function fitsRows(type: GgmlTypeName, rowLength: number): boolean {
  return rowLength % BLOCK_VALUES[type] === 0;
}

/** Bytes `count` values take as `type` (`count` a whole number of blocks). */
export function encodedBytes(type: GgmlTypeName, count: number): number {
  if (count % BLOCK_VALUES[type] !== 0)
    throw new RangeError(`${count} values are not a whole number of ${type} blocks`);
  return (count / BLOCK_VALUES[type]) * BLOCK_BYTES[type];
}

/** `values` (whole blocks) encoded as `type`, in a buffer of their own. */
export function encodeValues(type: GgmlTypeName, values: Float32Array): Uint8Array {
  const out = new Uint8Array(encodedBytes(type, values.length));
  if (type === "F32") {
    new Float32Array(out.buffer).set(values);
    return out;
  }
  const encodeBlock = type === "Q8_0" ? encodeQ8_0Block : encodeQ4_0Block;
  const view = new DataView(out.buffer);
  for (let b = 0; b * QUANT_BLOCK < values.length; b++)
    encodeBlock(values, b * QUANT_BLOCK, view, b * BLOCK_BYTES[type]);
  return out;
}

const f32 = Math.fround;

/** quantize_row_q8_0_ref on one block: values[from, from + 32) into 34 bytes at `at`. */
function encodeQ8_0Block(values: Float32Array, from: number, out: DataView, at: number): void {
  let amax = 0;
  for (let j = 0; j < QUANT_BLOCK; j++) amax = Math.max(amax, Math.abs(values[from + j]));
  const d = f32(amax / 127);
  const id = d !== 0 ? f32(1 / d) : 0;
  out.setUint16(at, floatToHalfBits(d), true);
  for (let j = 0; j < QUANT_BLOCK; j++)
    out.setInt8(at + 2 + j, roundHalfAwayFromZero(f32(values[from + j] * id)));
}

/** quantize_row_q4_0_ref on one block: values[from, from + 32) into 18 bytes at `at`. */
function encodeQ4_0Block(values: Float32Array, from: number, out: DataView, at: number): void {
  let amax = 0;
  let max = 0;
  for (let j = 0; j < QUANT_BLOCK; j++) {
    const v = values[from + j];
    // Strictly greater: on a tie the first value keeps the sign of the scale.
    if (amax < Math.abs(v)) {
      amax = Math.abs(v);
      max = v;
    }
  }
  // An all-zero block gives d = 0 / -8 = -0: its fp16 scale is 0x8000, as in C.
  const d = f32(max / -8);
  const id = d !== 0 ? f32(1 / d) : 0;
  out.setUint16(at, floatToHalfBits(d), true);
  const half = QUANT_BLOCK / 2;
  for (let j = 0; j < half; j++) {
    const low = nibble(f32(values[from + j] * id));
    const high = nibble(f32(values[from + half + j] * id));
    out.setUint8(at + 2 + j, low | (high << 4));
  }
}

/** C's `MIN(15, (int8_t)(x + 8.5f))`: x + 8.5 is never below 0, so truncation is floor. */
function nibble(scaled: number): number {
  return Math.min(15, Math.trunc(f32(scaled + 8.5)));
}

/** C's roundf: halves round away from zero (Math.round would send -2.5 to -2). */
function roundHalfAwayFromZero(x: number): number {
  return Math.sign(x) * Math.floor(Math.abs(x) + 0.5);
}
