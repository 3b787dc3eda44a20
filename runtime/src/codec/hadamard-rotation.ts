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
 * The signs: bit i of a sequence of 32-bit words — a Weyl sequence from SIGN_SEED (step
 * 0x9e3779b9), each term through MurmurHash3's 32-bit finalizer — the same on every edge
 * and worker of every version, part of the wire format of the rotated codecs.
 */

/** Largest block rotated as one: its transform costs log2(b) passes over the token. */
export const MAX_BLOCK = 1024;

/** The seed of the sign pattern D; changing it changes the rotated codecs' wire format. */
export const SIGN_SEED = 0x7a6e_d3e1;

/** The rotation's block size for `dim`: the largest power of two dividing it, at most MAX_BLOCK. */
export function rotationBlock(dim: number): number {
  return Math.min(MAX_BLOCK, dim & -dim);
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

export class HadamardRotation {
  readonly block: number;
  private readonly signs: Float32Array;
  private readonly norm: number;

  constructor(readonly dim: number) {
    this.block = rotationBlock(dim);
    this.signs = rotationSigns(dim);
    this.norm = 1 / Math.sqrt(this.block);
  }

  /** y = H·D·x for each of `count` tokens, into a new array. */
  rotate(x: Float32Array, count: number): Float32Array {
    return this.rotateInto(new Float32Array(count * this.dim), x, count);
  }

  /** y = H·D·x into `y` (count × dim values, not `x`), which is returned. */
  rotateInto(y: Float32Array, x: Float32Array, count: number): Float32Array {
    const { dim, signs } = this;
    for (let t = 0; t < count; t++) {
      const base = t * dim;
      for (let i = 0; i < dim; i++) y[base + i] = x[base + i] * signs[i];
    }
    this.transformBlocks(y);
    return y;
  }

  /** x = D·H·y for each token, in place (H is its own inverse): the array is returned. */
  unrotateInPlace(y: Float32Array, count: number): Float32Array {
    const { dim, signs } = this;
    this.transformBlocks(y);
    for (let t = 0; t < count; t++) {
      const base = t * dim;
      // + 0: a zero whose sign was flipped decodes as +0, as every codec decodes zeros.
      for (let i = 0; i < dim; i++) y[base + i] = y[base + i] * signs[i] + 0;
    }
    return y;
  }

  /**
   * The orthonormal fast Walsh–Hadamard transform of every block, in place: two butterfly
   * stages per pass over the block (radix 4), so each value is loaded and stored half as
   * often as one stage per pass would; an odd stage count starts with one radix-2 pass;
   * the 1/√b scale is folded into the last pass.
   */
  private transformBlocks(v: Float32Array): void {
    const { block, norm } = this;
    if (block === 1) return;
    const stages = Math.log2(block);
    for (let start = 0; start < v.length; start += block) {
      const end = start + block;
      let half = 1;
      let last = stages === 1;
      if (stages % 2 === 1) {
        const scale = last ? norm : 1;
        for (let i = start; i < end; i += 2) {
          const a = v[i];
          const b = v[i + 1];
          v[i] = (a + b) * scale;
          v[i + 1] = (a - b) * scale;
        }
        half = 2;
      }
      while (half < block) {
        last = half * 4 === block;
        const scale = last ? norm : 1;
        const quarter = half;
        for (let i = start; i < end; i += 4 * quarter) {
          for (let j = i; j < i + quarter; j++) {
            const a = v[j];
            const b = v[j + quarter];
            const c = v[j + 2 * quarter];
            const d = v[j + 3 * quarter];
            const ab = a + b;
            const aMinusB = a - b;
            const cd = c + d;
            const cMinusD = c - d;
            v[j] = (ab + cd) * scale;
            v[j + quarter] = (aMinusB + cMinusD) * scale;
            v[j + 2 * quarter] = (ab - cd) * scale;
            v[j + 3 * quarter] = (aMinusB - cMinusD) * scale;
          }
        }
        half *= 4;
      }
    }
  }
}
