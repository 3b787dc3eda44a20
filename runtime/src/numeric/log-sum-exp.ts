/** log Σ exp(x[i]) over x[from, from + width), shifted by the maximum so no term overflows. */
export function logSumExp(x: Float32Array, from = 0, width = x.length - from): number {
  let max = -Infinity;
  for (let i = from; i < from + width; i++) if (x[i] > max) max = x[i];
  let sum = 0;
  for (let i = from; i < from + width; i++) sum += Math.exp(x[i] - max);
  return max + Math.log(sum);
}
