/**
 * int8-rotated, int4-rotated: the int8 and int4 codecs applied to hidden states turned by
 * a fixed randomized Hadamard rotation (hadamard-rotation.ts), turned back after decoding.
 *
 * Wire format: exactly the inner codec's, of the rotated values y = H·D·x — same record
 * sizes (int8: dim + 4 bytes per token; int4: dim/2 + 2·dim/G), same layouts; the
 * rotation's block size and sign pattern follow from dim alone, so nothing more travels.
 *
 * Error: the rotation is orthonormal, so ‖x̂ − x‖₂ = ‖ŷ − y‖₂, where the inner codec
 * bounds each |ŷᵢ − yᵢ| by its step (int8: absmax(y)/254 per token; int4: absmax of
 * y's group/14). What changes is that absmax: a hidden state whose size sits in a few
 * outlier channels has them spread over their block once rotated, so its absmax — and
 * the step every other value pays — shrinks toward the token's typical magnitude. A
 * state without outliers gains little (the demo model's: ~0.5 points of agreement at
 * int4; see the README's codec table).
 *
 * Range: |yᵢ| ≤ ‖x‖₂ over the block, so the inner codec's limits apply to y (int4: a
 * block's norm within 458528 always encodes; a larger state may, or is refused by the
 * inner codec, whose message then names a coordinate of y). A NaN or ±∞ is refused
 * before rotating, naming its token and dim in x. Decode rejects what the inner codec
 * rejects; a decoded state is finite.
 */
import { checkHidden, rangeError } from "./common.ts";
import { HadamardRotation } from "./hadamard-rotation.ts";
import type { CodecName, HiddenStateCodec } from "./hidden-state-codec.ts";
import type { Int4Codec } from "./int4-codec.ts";
import type { Int8Codec } from "./int8-codec.ts";

export class RotatedCodec implements HiddenStateCodec {
  /** One rotation per hidden size seen: its sign pattern is built once. */
  private readonly rotations = new Map<number, HadamardRotation>();
  private scratch = new Float32Array(0);

  constructor(
    readonly name: Extract<CodecName, "int8-rotated" | "int4-rotated">,
    private readonly inner: Int8Codec | Int4Codec,
  ) {}

  encodedBytes(count: number, dim: number): number {
    return this.inner.encodedBytes(count, dim);
  }

  encode(hidden: Float32Array, count: number, dim: number): Uint8Array {
    checkHidden(hidden, count, dim);
    // The rotated state lives only until the inner codec has read it: one buffer serves
    // every call (encode is synchronous), sparing the garbage collector a state per token.
    if (this.scratch.length < hidden.length) this.scratch = new Float32Array(hidden.length);
    const rotated = this.rotationFor(dim).rotateInto(this.scratch.subarray(0, hidden.length), hidden, count);
    try {
      return this.inner.encode(rotated, count, dim);
    } catch (error) {
      // A NaN or ±∞ fills its whole block once rotated, and the inner codec refuses the
      // block: name the value where the caller put it. Looked for only on this error path,
      // so a finite state pays no extra pass.
      const nonFinite = hidden.findIndex((v) => !Number.isFinite(v));
      if (nonFinite >= 0) throw rangeError(this.name, hidden, dim, nonFinite, nonFinite + 1, Infinity, "");
      throw error;
    }
  }

  decode(bytes: Uint8Array, count: number, dim: number): Float32Array {
    // The inner codec first: it checks the shape and the payload.
    const rotated = this.inner.decode(bytes, count, dim);
    return this.rotationFor(dim).unrotateInPlace(rotated, count);
  }

  private rotationFor(dim: number): HadamardRotation {
    let rotation = this.rotations.get(dim);
    if (!rotation) this.rotations.set(dim, (rotation = new HadamardRotation(dim)));
    return rotation;
  }
}
