/**
 * Token sampling with temperature and nucleus (top-p), reproducible from a seed: the
 * random draw for a position is a hash of (seed, position), so the edge and the cloud
 * sample the same token from the same distribution, and a retried request gives the
 * same answer.
 */
import { FailedPreconditionError, InvalidArgumentError } from "@tandem/common";
import type { ExitResult } from "../engine/segment-sessions.ts";

export interface SamplingOptions {
  /** 0 means greedy. */
  temperature: number;
  /** Keep the smallest set of tokens whose probability reaches topP; 0 or 1 keeps all. */
  topP: number;
  seed: bigint;
}

export const GREEDY: SamplingOptions = { temperature: 0, topP: 1, seed: 0n };

/**
 * The one set of sampling limits: the edge's public API, the escalation protocol and
 * batch jobs all accept exactly these.
 */
export const SAMPLING_LIMITS = {
  /** 0 is greedy. */
  temperature: { min: 0, max: 100 },
  /** 0 or 1 keeps every token. */
  topP: { min: 0, max: 1 },
} as const;

/** Checks sampling options; errors name `${prefix}.temperature` or `${prefix}.top_p`. */
export function validateSampling(options: SamplingOptions, prefix = "sampling"): void {
  const { temperature, topP } = SAMPLING_LIMITS;
  if (!(options.temperature >= temperature.min && options.temperature <= temperature.max))
    throw new InvalidArgumentError(
      `${prefix}.temperature`,
      `must be in [${temperature.min}, ${temperature.max}], got ${options.temperature}`,
    );
  if (!(options.topP >= topP.min && options.topP <= topP.max))
    throw new InvalidArgumentError(
      `${prefix}.top_p`,
      `must be in [${topP.min}, ${topP.max}], got ${options.topP}`,
    );
  if (options.seed < 0n || options.seed >= 1n << 64n)
    throw new InvalidArgumentError(
      `${prefix}.seed`,
      `must be an unsigned 64-bit integer, got ${options.seed}`,
    );
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

/**
 * How any head (an exit, or the final head) answers the token at `position`, the same on
 * the edge, in the cloud and in-process: greedy takes the head's arg max and its
 * probability; sampling draws from the head's logits of the last evaluated position, and
 * a head built without logits cannot sample (FailedPreconditionError), never silently
 * answering greedy instead.
 */
export function answerFromHead(
  head: ExitResult,
  sampling: SamplingOptions,
  position: number,
  vocabSize: number,
): { token: number; prob: number } {
  if (isGreedy(sampling))
    return { token: head.token[head.token.length - 1], prob: head.prob[head.prob.length - 1] };
  if (!head.logits)
    throw new FailedPreconditionError(
      "sampling",
      `the head after layer ${head.afterLayer} was built without logits, so it can only answer greedy`,
    );
  return sampleToken(head.logits.subarray(head.logits.length - vocabSize), sampling, position);
}
