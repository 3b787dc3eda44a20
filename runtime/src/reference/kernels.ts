/**
 * The numeric kernels of the reference forward: plain loops over Float32Array, no
 * allocation inside them, sums in JS doubles. Exported so tests can check each one by hand.
 */
import type { RopeScaling } from "../checkpoint/model-config.ts";
import { rotaryInverseFrequencies } from "../checkpoint/rope-frequencies.ts";

/**
 * `out[t, r] = Σ_c x[t, c] · weight[r, c] (+ bias[r])` for `count` rows of `x` ([count, inDim]
 * row-major) and a Hugging Face linear weight `[outDim, inDim]`; `out` is [count, outDim].
 *
 * Every output is summed in the same order whatever `count` is (even and odd columns in two
 * double accumulators, then added), so a token's result does not depend on the batch it is
 * computed in: prefill and step-by-step decoding give bit-identical projections.
 */
export function linear(
  x: Float32Array,
  count: number,
  weight: Float32Array,
  inDim: number,
  outDim: number,
  out: Float32Array,
  bias?: Float32Array,
): void {
  if (count === 1) linearOneRow(x, weight, inDim, outDim, out, bias);
  else linearRows(x, count, weight, inDim, outDim, out, bias);
}

/** One input row: four weight rows at a time share each load of `x`. */
function linearOneRow(
  x: Float32Array,
  w: Float32Array,
  inDim: number,
  outDim: number,
  out: Float32Array,
  bias: Float32Array | undefined,
): void {
  const even = inDim & ~1;
  let r = 0;
  for (; r + 3 < outDim; r += 4) {
    const o0 = r * inDim;
    const o1 = o0 + inDim;
    const o2 = o1 + inDim;
    const o3 = o2 + inDim;
    let a0 = 0,
      a1 = 0,
      b0 = 0,
      b1 = 0,
      c0 = 0,
      c1 = 0,
      d0 = 0,
      d1 = 0;
    for (let c = 0; c < even; c += 2) {
      const x0 = x[c];
      const x1 = x[c + 1];
      a0 += w[o0 + c] * x0;
      a1 += w[o0 + c + 1] * x1;
      b0 += w[o1 + c] * x0;
      b1 += w[o1 + c + 1] * x1;
      c0 += w[o2 + c] * x0;
      c1 += w[o2 + c + 1] * x1;
      d0 += w[o3 + c] * x0;
      d1 += w[o3 + c + 1] * x1;
    }
    if (even < inDim) {
      const xv = x[even];
      a0 += w[o0 + even] * xv;
      b0 += w[o1 + even] * xv;
      c0 += w[o2 + even] * xv;
      d0 += w[o3 + even] * xv;
    }
    if (bias) {
      out[r] = a0 + a1 + bias[r];
      out[r + 1] = b0 + b1 + bias[r + 1];
      out[r + 2] = c0 + c1 + bias[r + 2];
      out[r + 3] = d0 + d1 + bias[r + 3];
    } else {
      out[r] = a0 + a1;
      out[r + 1] = b0 + b1;
      out[r + 2] = c0 + c1;
      out[r + 3] = d0 + d1;
    }
  }
  for (; r < outDim; r++) {
    const o = r * inDim;
    let s0 = 0,
      s1 = 0;
    for (let c = 0; c < even; c += 2) {
      s0 += w[o + c] * x[c];
      s1 += w[o + c + 1] * x[c + 1];
    }
    if (even < inDim) s0 += w[o + even] * x[even];
    out[r] = bias ? s0 + s1 + bias[r] : s0 + s1;
  }
}

/** Several input rows: tiles of two input rows × two weight rows (eight accumulators). */
function linearRows(
  x: Float32Array,
  count: number,
  w: Float32Array,
  inDim: number,
  outDim: number,
  out: Float32Array,
  bias: Float32Array | undefined,
): void {
  const even = inDim & ~1;
  for (let r = 0; r < outDim; r += 2) {
    const second = r + 1 < outDim;
    const o0 = r * inDim;
    // With an odd outDim the last tile computes its single row twice and stores it once.
    const o1 = second ? o0 + inDim : o0;
    const bias0 = bias ? bias[r] : 0;
    const bias1 = bias && second ? bias[r + 1] : 0;
    let t = 0;
    for (; t + 1 < count; t += 2) {
      const x0 = t * inDim;
      const x1 = x0 + inDim;
      let a0 = 0,
        a1 = 0,
        b0 = 0,
        b1 = 0,
        c0 = 0,
        c1 = 0,
        d0 = 0,
        d1 = 0;
      for (let c = 0; c < even; c += 2) {
        const p0 = x[x0 + c];
        const p1 = x[x0 + c + 1];
        const q0 = x[x1 + c];
        const q1 = x[x1 + c + 1];
        const u0 = w[o0 + c];
        const u1 = w[o0 + c + 1];
        const v0 = w[o1 + c];
        const v1 = w[o1 + c + 1];
        a0 += u0 * p0;
        a1 += u1 * p1;
        b0 += v0 * p0;
        b1 += v1 * p1;
        c0 += u0 * q0;
        c1 += u1 * q1;
        d0 += v0 * q0;
        d1 += v1 * q1;
      }
      if (even < inDim) {
        a0 += w[o0 + even] * x[x0 + even];
        b0 += w[o1 + even] * x[x0 + even];
        c0 += w[o0 + even] * x[x1 + even];
        d0 += w[o1 + even] * x[x1 + even];
      }
      const row0 = t * outDim + r;
      const row1 = row0 + outDim;
      // Same expression shape as linearOneRow: (s0 + s1) + bias.
      out[row0] = bias ? a0 + a1 + bias0 : a0 + a1;
      out[row1] = bias ? c0 + c1 + bias0 : c0 + c1;
      if (second) {
        out[row0 + 1] = bias ? b0 + b1 + bias1 : b0 + b1;
        out[row1 + 1] = bias ? d0 + d1 + bias1 : d0 + d1;
      }
    }
    if (t < count) {
      const x0 = t * inDim;
      let a0 = 0,
        a1 = 0,
        b0 = 0,
        b1 = 0;
      for (let c = 0; c < even; c += 2) {
        const p0 = x[x0 + c];
        const p1 = x[x0 + c + 1];
        a0 += w[o0 + c] * p0;
        a1 += w[o0 + c + 1] * p1;
        b0 += w[o1 + c] * p0;
        b1 += w[o1 + c + 1] * p1;
      }
      if (even < inDim) {
        a0 += w[o0 + even] * x[x0 + even];
        b0 += w[o1 + even] * x[x0 + even];
      }
      const row0 = t * outDim + r;
      out[row0] = bias ? a0 + a1 + bias0 : a0 + a1;
      if (second) out[row0 + 1] = bias ? b0 + b1 + bias1 : b0 + b1;
    }
  }
}

/** RMSNorm of each of `count` rows of width `dim`: `x · rsqrt(mean(x²) + eps) · weight`. */
export function rmsNormRows(
  x: Float32Array,
  count: number,
  dim: number,
  weight: Float32Array,
  eps: number,
  out: Float32Array,
): void {
  for (let t = 0; t < count; t++) {
    const o = t * dim;
    let sumSquares = 0;
    for (let i = 0; i < dim; i++) sumSquares += x[o + i] * x[o + i];
    const inverse = 1 / Math.sqrt(sumSquares / dim + eps);
    for (let i = 0; i < dim; i++) out[o + i] = x[o + i] * inverse * weight[i];
  }
}

/** `silu(gate) · up` element-wise into `gate`, for the first `length` values. */
export function siluMultiply(gate: Float32Array, up: Float32Array, length: number): void {
  for (let i = 0; i < length; i++) {
    const g = gate[i];
    gate[i] = (g / (1 + Math.exp(-g))) * up[i];
  }
}

/**
 * Rotary position embedding in Hugging Face's non-interleaved ("rotate_half") layout:
 * dimension i of a head pairs with i + headDim/2. Frequencies, angles and cos/sin are
 * float32 as in transformers' `LlamaRotaryEmbedding`; each product is rounded to float32
 * like PyTorch's `q * cos + rotate_half(q) * sin`, so the rotation matches it bit for bit.
 */
export class RotaryEmbedding {
  readonly headDim: number;
  /** `1 / theta^(2i / headDim)` for i < headDim / 2, scaled as configured; float32. */
  readonly inverseFrequency: Float32Array;
  private readonly half: number;
  private positions = 0;
  private cos = new Float32Array(0);
  private sin = new Float32Array(0);

  constructor(headDim: number, theta: number, scaling?: RopeScaling) {
    this.headDim = headDim;
    this.half = headDim / 2;
    this.inverseFrequency = rotaryInverseFrequencies({ headDim, ropeTheta: theta, ropeScaling: scaling });
  }

  /** Rotates `heads` consecutive heads of `vector`, starting at `offset`, to `position`; in place. */
  apply(vector: Float32Array, offset: number, heads: number, position: number): void {
    if (position >= this.positions) this.grow(position + 1);
    const half = this.half;
    const { cos, sin } = this;
    const table = position * half;
    for (let head = 0; head < heads; head++) {
      const o = offset + head * this.headDim;
      for (let i = 0; i < half; i++) {
        const c = cos[table + i];
        const s = sin[table + i];
        const a = vector[o + i];
        const b = vector[o + i + half];
        vector[o + i] = Math.fround(a * c) - Math.fround(b * s);
        vector[o + i + half] = Math.fround(b * c) + Math.fround(a * s);
      }
    }
  }

  private grow(positions: number): void {
    const capacity = Math.max(positions, this.positions * 2, 64);
    const half = this.half;
    const cos = new Float32Array(capacity * half);
    const sin = new Float32Array(capacity * half);
    cos.set(this.cos);
    sin.set(this.sin);
    for (let p = this.positions; p < capacity; p++) {
      for (let i = 0; i < half; i++) {
        const angle = Math.fround(p * this.inverseFrequency[i]);
        cos[p * half + i] = Math.cos(angle);
        sin[p * half + i] = Math.sin(angle);
      }
    }
    this.cos = cos;
    this.sin = sin;
    this.positions = capacity;
  }
}
