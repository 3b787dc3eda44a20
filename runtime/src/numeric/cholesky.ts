/**
 * Cholesky factorisation and solve of symmetric positive definite systems in float64: the
 * normal equations of the exit maps' ridge regression and the Newton steps of the exits'
 * confidence models. Small dense n (a hidden size at most), so plain loops.
 */
import { InvalidArgumentError } from "@tandem/common";

/**
 * Lower-triangular L with A = L·Lᵀ, written over the lower triangle of `a`; `what` says
 * which data a singular A means are degenerate.
 */
export function choleskyInPlace(a: Float64Array, n: number, what = "the rows are degenerate"): void {
  for (let j = 0; j < n; j++) {
    let diagonal = a[j * n + j];
    for (let k = 0; k < j; k++) diagonal -= a[j * n + k] * a[j * n + k];
    if (!(diagonal > 0)) throw new InvalidArgumentError("rows", what + " (matrix not positive definite)");
    const root = Math.sqrt(diagonal);
    a[j * n + j] = root;
    for (let i = j + 1; i < n; i++) {
      let sum = a[i * n + j];
      for (let k = 0; k < j; k++) sum -= a[i * n + k] * a[j * n + k];
      a[i * n + j] = sum / root;
    }
  }
}

/** Solves L·Lᵀ·x = b for x, written over b, with L from choleskyInPlace. */
export function choleskySolveInPlace(l: Float64Array, n: number, b: Float64Array): void {
  for (let i = 0; i < n; i++) {
    let sum = b[i];
    for (let k = 0; k < i; k++) sum -= l[i * n + k] * b[k];
    b[i] = sum / l[i * n + i];
  }
  for (let i = n - 1; i >= 0; i--) {
    let sum = b[i];
    for (let k = i + 1; k < n; k++) sum -= l[k * n + i] * b[k];
    b[i] = sum / l[i * n + i];
  }
}
