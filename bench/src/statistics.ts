/**
 * Order statistics for benchmark samples. Timed figures drift on a shared machine, so
 * benchmarks report medians and percentiles of several samples rather than means.
 */

/** The middle value (the upper one of the two middles for an even count). */
export const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

/** The value below which a share `p` (0..1) of the samples fall. */
export const percentile = (values: number[], p: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
};

/** Share of positions where two token sequences agree; a position one of them lacks disagrees. */
export function tokenAgreement(a: readonly number[], b: readonly number[]): number {
  let same = 0;
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] === b[i]) same++;
  return same / Math.max(a.length, b.length, 1);
}
