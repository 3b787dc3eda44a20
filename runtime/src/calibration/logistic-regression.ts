/**
 * L2-regularised logistic regression by Newton's method, for the exits' confidence models
 * (exits/confidence-model.ts): a dozen features over tens of thousands of positions, so a
 * Newton step (a d×d solve) costs nothing and a few reach the optimum. Features are
 * standardised for the fit and the weights returned on the raw features.
 */
import { InvalidArgumentError } from "@tandem/common";
import { choleskyInPlace, choleskySolveInPlace } from "../numeric/cholesky.ts";

export interface LogisticOptions {
  /** Weight of ½‖w‖² (bias included) beside the mean log-loss, on standardised features. @default 1e-4 */
  l2?: number;
  /** @default 50 */
  maxIterations?: number;
}

export interface LogisticFit {
  /** Applies to the raw features: logit = bias + Σ weights[i]·x[i]. */
  weights: number[];
  bias: number;
  /** Mean log-loss on the rows at the end (without the penalty). */
  logLoss: number;
  iterations: number;
}

/** Each column's mean and standard deviation (1 where the column is constant). */
export function columnMoments(rows: number[][]): { mean: number[]; scale: number[] } {
  const width = rows[0]?.length ?? 0;
  const n = Math.max(1, rows.length);
  const mean = new Array<number>(width).fill(0);
  const variance = new Array<number>(width).fill(0);
  for (const row of rows) for (let j = 0; j < width; j++) mean[j] += row[j] / n;
  for (const row of rows) for (let j = 0; j < width; j++) variance[j] += (row[j] - mean[j]) ** 2 / n;
  return { mean, scale: variance.map((v) => (v > 1e-24 ? Math.sqrt(v) : 1)) };
}

export function fitLogistic(rows: number[][], labels: boolean[], options: LogisticOptions = {}): LogisticFit {
  const l2 = options.l2 ?? 1e-4;
  const maxIterations = options.maxIterations ?? 50;
  const n = rows.length;
  if (n === 0) throw new InvalidArgumentError("rows", "need at least one row to fit");
  if (labels.length !== n)
    throw new InvalidArgumentError("labels", `has ${labels.length} entries for ${n} rows`);
  const d = rows[0].length;
  for (const [r, row] of rows.entries()) {
    if (row.length !== d)
      throw new InvalidArgumentError("rows", `row ${r} has ${row.length} features, row 0 has ${d}`);
    if (!row.every(Number.isFinite))
      throw new InvalidArgumentError("rows", `row ${r} holds a value that is not finite`);
  }
  if (!(l2 > 0)) throw new InvalidArgumentError("l2", `must be > 0, got ${l2}`);

  // Standardised columns, with a constant 1 last for the bias. A constant column becomes
  // zeros (scale 1): the penalty keeps the Hessian positive definite and its weight 0.
  const { mean, scale } = columnMoments(rows);
  const m = d + 1;
  const x = new Float64Array(n * m);
  for (let r = 0; r < n; r++) {
    for (let j = 0; j < d; j++) x[r * m + j] = (rows[r][j] - mean[j]) / scale[j];
    x[r * m + d] = 1;
  }
  const y = Float64Array.from(labels, (l) => (l ? 1 : 0));

  const w = new Float64Array(m);
  const logit = (r: number, weights: Float64Array) => {
    let z = 0;
    for (let j = 0; j < m; j++) z += x[r * m + j] * weights[j];
    return z;
  };
  // log(1 + e^z) − y·z, stable for either sign of z.
  const loss = (weights: Float64Array) => {
    let sum = 0;
    for (let r = 0; r < n; r++) {
      const z = logit(r, weights);
      sum += Math.max(z, 0) + Math.log1p(Math.exp(-Math.abs(z))) - y[r] * z;
    }
    let penalty = 0;
    for (let j = 0; j < m; j++) penalty += weights[j] ** 2;
    return { mean: sum / n, objective: sum / n + (l2 / 2) * penalty };
  };

  let current = loss(w);
  let iterations = 0;
  const gradient = new Float64Array(m);
  const hessian = new Float64Array(m * m);
  for (; iterations < maxIterations; iterations++) {
    gradient.fill(0);
    hessian.fill(0);
    for (let r = 0; r < n; r++) {
      const p = 1 / (1 + Math.exp(-logit(r, w)));
      const weight = p * (1 - p);
      for (let i = 0; i < m; i++) {
        const xi = x[r * m + i];
        gradient[i] += ((p - y[r]) * xi) / n;
        for (let j = 0; j <= i; j++) hessian[i * m + j] += (weight * xi * x[r * m + j]) / n;
      }
    }
    for (let i = 0; i < m; i++) {
      gradient[i] += l2 * w[i];
      hessian[i * m + i] += l2;
      for (let j = 0; j < i; j++) hessian[j * m + i] = hessian[i * m + j];
    }
    choleskyInPlace(hessian, m, "the features are degenerate");
    const step = Float64Array.from(gradient);
    choleskySolveInPlace(hessian, m, step);
    // Newton's step, halved while it does not lower the objective (it nearly always does).
    let size = 1;
    let next = w;
    let nextLoss = current;
    for (let halvings = 0; halvings < 30; halvings++, size /= 2) {
      const candidate = Float64Array.from(w, (v, j) => v - size * step[j]);
      const candidateLoss = loss(candidate);
      if (candidateLoss.objective <= current.objective) {
        next = candidate;
        nextLoss = candidateLoss;
        break;
      }
    }
    const moved = Math.max(...next.map((v, j) => Math.abs(v - w[j])));
    w.set(next);
    current = nextLoss;
    if (moved < 1e-9) {
      iterations++;
      break;
    }
  }

  const weights = Array.from({ length: d }, (_, j) => w[j] / scale[j]);
  let bias = w[d];
  for (let j = 0; j < d; j++) bias -= (w[j] * mean[j]) / scale[j];
  return { weights, bias, logLoss: current.mean, iterations };
}
