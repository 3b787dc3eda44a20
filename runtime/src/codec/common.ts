/**
 * Helpers shared by the hidden-state codecs: argument and payload checks, rounding.
 * The hot loops only detect that something is wrong (an absmax that is not finite or
 * out of range); `rangeError` then finds the offending element and builds the error,
 * so the fast path stays lean.
 */
import { CodecError, InvalidArgumentError, UnsupportedError } from "@tandem/common";

/**
 * 1.5 · 2^52: adding and subtracting it rounds a double with |v| < 2^51 to an integer,
 * nearest even on ties, without a branch: five times faster than Math.round or a
 * sign test in the quantization loops, where signs are random.
 */
export const ROUND = 6755399441055744;

/** Typed-array views are host-endian; every wire format here is little-endian. */
const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export function checkHost(): void {
  if (!LITTLE_ENDIAN_HOST) throw new UnsupportedError("hidden-state codecs need a little-endian host");
}

export function checkShape(count: number, dim: number): void {
  if (!Number.isSafeInteger(count) || count < 1)
    throw new InvalidArgumentError("count", `must be a positive integer, got ${count}`);
  if (!Number.isSafeInteger(dim) || dim < 1)
    throw new InvalidArgumentError("dim", `must be a positive integer, got ${dim}`);
}

export function checkHidden(hidden: Float32Array, count: number, dim: number): void {
  checkShape(count, dim);
  if (!(hidden instanceof Float32Array)) throw new InvalidArgumentError("hidden", "must be a Float32Array");
  if (hidden.length !== count * dim)
    throw new InvalidArgumentError(
      "hidden",
      `has ${hidden.length} values, expected count × dim = ${count} × ${dim} = ${count * dim}`,
    );
}

export function checkPayload(
  codec: string,
  bytes: Uint8Array,
  expected: number,
  count: number,
  dim: number,
): void {
  if (!(bytes instanceof Uint8Array)) throw new InvalidArgumentError("bytes", "must be a Uint8Array");
  if (bytes.length !== expected)
    throw new CodecError(
      `${codec} payload for ${count} × ${dim} must be ${expected} bytes, got ${bytes.length}`,
    );
}

/**
 * The error for the first value in `hidden[from, to)` that is not finite or whose
 * magnitude exceeds `limit` (what `codec` can represent). Call it only when the hot
 * loop saw such a value.
 */
export function rangeError(
  codec: string,
  hidden: Float32Array,
  dim: number,
  from: number,
  to: number,
  limit: number,
  limitNote: string,
): CodecError {
  for (let i = from; i < to; i++) {
    const v = hidden[i];
    const where = `token ${Math.floor(i / dim)}, dim ${i % dim}`;
    if (!Number.isFinite(v)) return new CodecError(`${codec}: hidden state is not finite at ${where} (${v})`);
    if (Math.abs(v) > limit)
      return new CodecError(`${codec}: hidden state ${v} at ${where} is out of range (${limitNote})`);
  }
  // Unreachable when called as documented; still an error rather than silence.
  return new CodecError(`${codec}: hidden state out of range in values [${from}, ${to})`);
}

/**
 * Bytes as given when aligned to `alignment`, else an aligned copy: payloads decoded
 * from a protobuf message are views into it at any offset. (`new Uint8Array(bytes)`
 * copies; `Buffer#slice` would not.)
 */
export function alignedBytes(bytes: Uint8Array, alignment: number): Uint8Array {
  return bytes.byteOffset % alignment === 0 ? bytes : new Uint8Array(bytes);
}
