/**
 * Token sampling with temperature and nucleus (top-p), reproducible from a seed: the
 * random draw for a position is a hash of (seed, position), so the edge and the cloud
 * sample the same token from the same distribution, and a retried request gives the
 * same answer.
 */
import { InvalidArgumentError } from "@tandem/common";

export interface SamplingOptions {
  /** 0 means greedy. */
  temperature: number;
  /** Keep the smallest set of tokens whose probability reaches topP; 0 or 1 keeps all. */
  topP: number;
  seed: bigint;
}

export const GREEDY: SamplingOptions = { temperature: 0, topP: 1, seed: 0n };

export function validateSampling(options: SamplingOptions): void {
  if (!(options.temperature >= 0) || options.temperature > 100)
    throw new InvalidArgumentError("sampling.temperature", `must be in [0, 100], got ${options.temperature}`);
  if (!(options.topP >= 0) || options.topP > 1)
    throw new InvalidArgumentError("sampling.top_p", `must be in [0, 1], got ${options.topP}`);
}

export function isGreedy(options: SamplingOptions): boolean {
  return options.temperature === 0;
}

const MASK64 = (1n << 64n) - 1n;

/** splitmix64 of seed and position → a uniform number in [0, 1). */
export function positionUniform(seed: bigint, position: number): number {
  let z = (seed + BigInt(position + 1) * 0x9e3779b97f4a7c15n) & MASK64;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
  z ^= z >> 31n;
  return Number(z >> 11n) / 2 ** 53;
}

/** Samples from logits; returns the token and its probability under the tempered distribution. */
export function sampleToken(
  logits: Float32Array,
  options: SamplingOptions,
  position: number,
): { token: number; prob: number } {
  let max = -Infinity;
  let argmax = 0;
  for (let i = 0; i < logits.length; i++) {
    if (logits[i] > max) {
      max = logits[i];
      argmax = i;
    }
  }
  const probs = new Float64Array(logits.length);
  const temperature = isGreedy(options) ? 1 : options.temperature;
  let total = 0;
  for (let i = 0; i < logits.length; i++) {
    probs[i] = Math.exp((logits[i] - max) / temperature);
    total += probs[i];
  }
  for (let i = 0; i < probs.length; i++) probs[i] /= total;
  if (isGreedy(options)) return { token: argmax, prob: probs[argmax] };

  const order = Array.from(probs.keys()).sort((a, b) => probs[b] - probs[a] || a - b);
  const topP = options.topP > 0 && options.topP < 1 ? options.topP : 1;
  let kept = 0;
  let mass = 0;
  while (kept < order.length && (kept === 0 || mass < topP)) mass += probs[order[kept++]];
  let u = positionUniform(options.seed, position) * mass;
  for (let k = 0; k < kept; k++) {
    u -= probs[order[k]];
    if (u < 0) return { token: order[k], prob: probs[order[k]] / mass };
  }
  const last = order[kept - 1];
  return { token: last, prob: probs[last] / mass };
}
