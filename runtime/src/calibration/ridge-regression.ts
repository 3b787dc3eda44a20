/**
 * Ridge least squares for exit maps ("Jump to Conclusions"): find W, b minimising
 * ‖X·W + b − Y‖² + λ‖W‖², with X the hidden states at an exit layer and Y the last
 * layer's. The normal equations are accumulated in float64 and solved by Cholesky.
 */
import { InvalidArgumentError } from "@tandem/common";
import { choleskyInPlace, choleskySolveInPlace } from "../numeric/cholesky.ts";

export class RidgeAccumulator {
  /** [dim+1]² Gram matrix of [x, 1]. */
  private readonly gram: Float64Array;
  /** [dim+1, dim] cross products of [x, 1] with y. */
  private readonly cross: Float64Array;
  rows = 0;

  constructor(readonly dim: number) {
    this.gram = new Float64Array((dim + 1) * (dim + 1));
    this.cross = new Float64Array((dim + 1) * dim);
  }

  /** Adds `count` rows: x and y are row-major [count, dim]. */
  add(x: Float32Array, y: Float32Array, count: number): void {
    const d = this.dim;
    const n = d + 1;
    const row = new Float64Array(n);
    row[d] = 1;
    for (let r = 0; r < count; r++) {
      for (let i = 0; i < d; i++) row[i] = x[r * d + i];
      const yOffset = r * d;
      for (let i = 0; i < n; i++) {
        const xi = row[i];
        if (xi === 0) continue;
        const gramRow = i * n;
        // Upper triangle only; mirrored in solve().
        for (let j = i; j < n; j++) this.gram[gramRow + j] += xi * row[j];
        const crossRow = i * d;
        for (let j = 0; j < d; j++) this.cross[crossRow + j] += xi * y[yOffset + j];
      }
    }
    this.rows += count;
  }

  /**
   * Solves for the map. `ridge` is relative: λ = ridge · trace(XᵀX)/dim, so one value
   * suits hidden states of any scale. The bias is not regularised.
   * Returns weight [dim, dim] row-major (h' = h · W + b) and bias [dim].
   */
  solve(ridge: number): { weight: Float32Array; bias: Float32Array } {
    const d = this.dim;
    const n = d + 1;
    if (this.rows <= d)
      throw new InvalidArgumentError(
        "rows",
        `need more than ${d} rows to fit a ${d}×${d} map, got ${this.rows}`,
      );
    const a = new Float64Array(n * n);
    for (let i = 0; i < n; i++) {
      for (let j = i; j < n; j++) {
        a[i * n + j] = this.gram[i * n + j];
        a[j * n + i] = this.gram[i * n + j];
      }
    }
    let trace = 0;
    for (let i = 0; i < d; i++) trace += a[i * n + i];
    const lambda = (ridge * trace) / d;
    for (let i = 0; i < d; i++) a[i * n + i] += lambda;
    // A tiny jitter on the bias diagonal keeps the factorisation positive definite.
    a[d * n + d] += 1e-9 * (trace / d + 1);

    choleskyInPlace(a, n, "the hidden states are degenerate");
    const weight = new Float32Array(d * d);
    const bias = new Float32Array(d);
    const column = new Float64Array(n);
    for (let j = 0; j < d; j++) {
      for (let i = 0; i < n; i++) column[i] = this.cross[i * d + j];
      choleskySolveInPlace(a, n, column);
      for (let i = 0; i < d; i++) weight[i * d + j] = column[i];
      bias[j] = column[d];
    }
    return { weight, bias };
  }
}
