import { logSumExp } from "./log-sum-exp.ts";

/**
 * KL(softmax(p) ‖ softmax(q)) row by row, on the host: what a segment graph computes as an
 * exit's kl_previous (segment-graph.ts), for exits that sit in separate graphs (host-routed
 * MoE pieces). Summed in float64.
 */
export function klDivergenceRows(p: Float32Array, q: Float32Array, width: number): Float32Array {
  if (p.length !== q.length || p.length % width !== 0)
    throw new RangeError(`logits of ${p.length} and ${q.length} values are not rows of ${width}`);
  const rows = p.length / width;
  const out = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    const from = r * width;
    const lseP = logSumExp(p, from, width);
    const lseQ = logSumExp(q, from, width);
    let kl = 0;
    for (let i = from; i < from + width; i++) kl += Math.exp(p[i] - lseP) * (p[i] - q[i]);
    out[r] = kl - lseP + lseQ;
  }
  return out;
}
