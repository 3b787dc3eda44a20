/**
 * A fixed randomized Hadamard rotation of hidden states (QuaRot-style), applied before
 * quantizing a token and undone after: y = H·D·x per block, x = D·H·y, where D flips the
 * signs of a seeded, fixed pattern of coordinates and H is the orthonormal Walsh–Hadamard
 * matrix of the block (entries ±1/√b). Hidden states carry a few channels orders of
 * magnitude above the rest ("massive activations"); rotated, each such outlier is spread
 * evenly over its block, so a quantization group's absmax — and with it every value's
 * step — follows the token's typical size instead of its largest channel.
 *
 * Blocks: the token's `dim` values split into consecutive blocks of b = the largest power
 * of two dividing dim, at most MAX_BLOCK (dim 2048 → 2 × 1024, 896 → 7 × 128, 576 →
 * 9 × 64). The rotation is orthonormal, so it keeps Euclidean norms: the error a codec
 * makes on y is the error of x̂ in L2.
 *
 * The transform runs in WebAssembly SIMD (wasm/codec-kernels.wat): four floats per
 * instruction, ~4× the JavaScript loop it replaced, on the escalation hot path; tokens go
 * through the kernels' memory in chunks (wasm/codec-kernels.ts).
 *
 * The signs: bit i of a sequence of 32-bit words — a Weyl sequence from SIGN_SEED (step
 * 0x9e3779b9), each term through MurmurHash3's 32-bit finalizer — the same on every edge
 * and worker of every version, part of the wire format of the rotated codecs.
 */

import { codecKernels, SCRATCH_BYTES } from "./wasm/codec-kernels.ts";

/** Largest block rotated as one: its transform costs log2(b) passes over the token. */
export const MAX_BLOCK = 1024;

/** The seed of the sign pattern D; changing it changes the rotated codecs' wire format. */
export const SIGN_SEED = 0x7a6e_d3e1;

/**
 * The rotation's block size for `dim`: the largest power of two dividing it, at most
 * `maxBlock` (a power of two; MAX_BLOCK unless a caller caps it, as w8a8's graph does).
 */
export function rotationBlock(dim: number, maxBlock = MAX_BLOCK): number {
  return Math.min(maxBlock, dim & -dim);
}

/** ±1 per coordinate of a token of `dim` values, from the seeded sequence described above. */
export function rotationSigns(dim: number): Float32Array {
  const signs = new Float32Array(dim);
  let state = SIGN_SEED >>> 0;
  let word = 0;
  for (let i = 0; i < dim; i++) {
    if (i % 32 === 0) {
      state = (state + 0x9e3779b9) >>> 0;
      let z = state;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      word = (z ^ (z >>> 16)) >>> 0;
    }
    signs[i] = (word >>> (i % 32)) & 1 ? -1 : 1;
  }
  return signs;
}

/**
 * The orthonormal Walsh–Hadamard matrix of a power-of-two `block`, row-major [block, block]:
 * entry (i, j) = (−1)^popcount(i & j) / √block — the matrix the transform multiplies by,
 * for a graph that rotates with a MatMul (segment-graph.ts, w8a8). It is symmetric.
 */
export function hadamardMatrix(block: number): Float32Array {
  if (block < 1 || (block & (block - 1)) !== 0)
    throw new RangeError(`a Hadamard block is a power of two, got ${block}`);
  const norm = 1 / Math.sqrt(block);
  const matrix = new Float32Array(block * block);
  for (let i = 0; i < block; i++)
    for (let j = 0; j < block; j++) {
      let bits = i & j;
      let parity = 0;
      while (bits) {
        parity ^= bits & 1;
        bits >>>= 1;
      }
      matrix[i * block + j] = parity ? -norm : norm;
    }
  return matrix;
}

export class HadamardRotation {
  readonly block: number;
  private readonly norm: number;
  private readonly kernels = codecKernels();
  /** Tokens per call into the kernels: as many as scratch holds (at least one). */
  private readonly chunkTokens: number;
  /** Where D's signs, and D's signs · norm, sit in the kernels' memory (tables never move). */
  private readonly signsAt: number;
  private readonly factorsAt: number;

  /**
   * @param maxBlock the largest block rotated as one (a power of two), below MAX_BLOCK where
   *   the rotation's cost matters more than its spread (a graph's dense MatMul)
   */
  constructor(
    readonly dim: number,
    maxBlock = MAX_BLOCK,
  ) {
    this.block = rotationBlock(dim, maxBlock);
    const norm = (this.norm = 1 / Math.sqrt(this.block));
    this.chunkTokens = Math.max(1, Math.floor(SCRATCH_BYTES / (4 * dim)));
    this.signsAt = this.kernels.table(`rotation-signs-${dim}`, () => rotationSigns(dim));
    this.factorsAt = this.kernels.table(`rotation-factors-${dim}`, () =>
      rotationSigns(dim).map((sign) => sign * norm),
    );
  }

  /** y = H·D·x for each of `count` tokens, into a new array. */
  rotate(x: Float32Array, count: number): Float32Array {
    return this.rotateInto(new Float32Array(count * this.dim), x, count);
  }

  /** y = H·D·x into `y` (count × dim values, not `x`), which is returned. */
  rotateInto(y: Float32Array, x: Float32Array, count: number): Float32Array {
    const { dim, block, norm, kernels, signsAt } = this;
    for (let t = 0; t < count; t += this.chunkTokens) {
      const tokens = Math.min(this.chunkTokens, count - t);
      const at = kernels.scratch(4 * tokens * dim);
      const data = kernels.f32(at, tokens * dim);
      data.set(x.subarray(t * dim, (t + tokens) * dim));
      kernels.exports.rotate(at, signsAt, dim, tokens, block, norm);
      y.set(data, t * dim);
    }
    return y;
  }

  /** x = D·H·y for each token, in place (H is its own inverse): the array is returned. */
  unrotateInPlace(y: Float32Array, count: number): Float32Array {
    const { dim, block, kernels, factorsAt } = this;
    for (let t = 0; t < count; t += this.chunkTokens) {
      const tokens = Math.min(this.chunkTokens, count - t);
      const chunk = y.subarray(t * dim, (t + tokens) * dim);
      const at = kernels.scratch(4 * tokens * dim);
      const data = kernels.f32(at, tokens * dim);
      data.set(chunk);
      kernels.exports.unrotate(at, factorsAt, dim, tokens, block);
      chunk.set(data);
    }
    return y;
  }
}
