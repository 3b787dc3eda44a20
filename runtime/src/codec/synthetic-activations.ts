/**
 * Deterministic hidden-state-like data for the codec tests and the codec benchmark.
 *
 * Split-layer hidden states of LLMs are roughly Gaussian per channel, their scale
 * varies from token to token, and a few channels carry "massive activations": values
 * tens of times the typical size, of a fixed sign, in every token. Those channels are
 * what make per-token absmax quantization hard, so the benchmark must have them.
 */

/** A seeded standard-normal generator (mulberry32 + Box–Muller). */
export function gaussian(seed: number): () => number {
  let state = seed >>> 0;
  const uniform = (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 15), z | 1);
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61);
    return (((z ^ (z >>> 14)) >>> 0) + 0.5) / 2 ** 32;
  };
  return () => Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
}

export interface ActivationOptions {
  /** @default 1 */
  seed?: number;
  /** Channels with massive activations. @default 0 (plain Gaussian) */
  outlierChannels?: number;
  /** Typical magnitude of an outlier channel, in units of the other channels' σ. @default 40 */
  outlierScale?: number;
  /** σ of the log of each token's scale (0: every token σ = 1). @default 0 */
  tokenScaleSpread?: number;
}

/** `count` × `dim` row-major activations. */
export function activations(count: number, dim: number, options: ActivationOptions = {}): Float32Array {
  const { seed = 1, outlierChannels = 0, outlierScale = 40, tokenScaleSpread = 0 } = options;
  const normal = gaussian(seed);
  const channelMean = new Float64Array(dim);
  for (let k = 0; k < Math.min(outlierChannels, dim); k++) {
    // Spread the outliers over the channels (distinct, deterministic) with sizes in [0.5, 1.5]·scale.
    const channel = Math.floor(((k + 0.5) * dim) / Math.min(outlierChannels, dim));
    channelMean[channel] = (k % 2 ? -1 : 1) * outlierScale * (1 + 0.5 * Math.tanh(normal()));
  }
  const out = new Float32Array(count * dim);
  for (let t = 0; t < count; t++) {
    const tokenScale = Math.exp(tokenScaleSpread * normal());
    for (let d = 0; d < dim; d++) {
      const mean = channelMean[d];
      out[t * dim + d] = tokenScale * (mean + normal() * (mean === 0 ? 1 : 0.1 * Math.abs(mean)));
    }
  }
  return out;
}
