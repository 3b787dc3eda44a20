/**
 * fp32: the hidden state as is. Wire format: `count · dim` little-endian IEEE float32,
 * token-major (value (t, d) at byte 4·(t·dim + d)); 4·dim bytes per token. Lossless.
 */
import { CodecError } from "@tandem/common";
import { checkHidden, checkPayload, checkShape, rangeError } from "./common.ts";
import type { HiddenStateCodec } from "./hidden-state-codec.ts";

const EXPONENT = 0x7f800000;

export class Fp32Codec implements HiddenStateCodec {
  readonly name = "fp32";

  encodedBytes(count: number, dim: number): number {
    checkShape(count, dim);
    return count * dim * 4;
  }

  encode(hidden: Float32Array, count: number, dim: number): Uint8Array {
    checkHidden(hidden, count, dim);
    const n = count * dim;
    const out = hidden.slice(); // a fresh, exactly sized buffer (faster than allocate + set)
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) {
      if ((bits[i] & EXPONENT) === EXPONENT) throw rangeError("fp32", hidden, dim, i, n, Infinity, "finite");
    }
    return new Uint8Array(out.buffer);
  }

  decode(bytes: Uint8Array, count: number, dim: number): Float32Array {
    checkPayload("fp32", bytes, this.encodedBytes(count, dim), count, dim);
    const n = count * dim;
    const out = new Float32Array(n);
    new Uint8Array(out.buffer).set(bytes); // one copy, whatever the payload's alignment
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) {
      if ((bits[i] & EXPONENT) === EXPONENT)
        throw new CodecError(
          `fp32 payload holds a non-finite value at token ${Math.floor(i / dim)}, dim ${i % dim}`,
        );
    }
    return out;
  }
}
