/**
 * fp32: the hidden state as is. Wire format: `count · dim` little-endian IEEE float32,
 * token-major (value (t, d) at byte 4·(t·dim + d)); 4·dim bytes per token. Lossless.
 */
import { CodecError } from "@tandem/common";
import { checkHidden, checkPayload, checkShape, rangeError } from "./common.ts";
import type { HiddenStateCodec } from "./hidden-state-codec.ts";
import { pooledFloat32Array, pooledUint8Array } from "./pooled-arrays.ts";

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
    const bytes = pooledUint8Array(4 * n);
    const out = new Float32Array(bytes.buffer, bytes.byteOffset, n);
    out.set(hidden);
    const bits = new Uint32Array(bytes.buffer, bytes.byteOffset, n);
    for (let i = 0; i < n; i++) {
      if ((bits[i] & EXPONENT) === EXPONENT) throw rangeError("fp32", hidden, dim, i, n, Infinity, "finite");
    }
    return bytes;
  }

  decode(bytes: Uint8Array, count: number, dim: number): Float32Array {
    checkPayload("fp32", bytes, this.encodedBytes(count, dim), count, dim);
    const n = count * dim;
    const out = pooledFloat32Array(n);
    new Uint8Array(out.buffer, out.byteOffset, 4 * n).set(bytes); // one copy, whatever the payload's alignment
    const bits = new Uint32Array(out.buffer, out.byteOffset, n);
    for (let i = 0; i < n; i++) {
      if ((bits[i] & EXPONENT) === EXPONENT)
        throw new CodecError(
          `fp32 payload holds a non-finite value at token ${Math.floor(i / dim)}, dim ${i % dim}`,
        );
    }
    return out;
  }
}
