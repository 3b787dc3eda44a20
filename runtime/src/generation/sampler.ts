/**
 * Token sampling with repetition, presence and frequency penalties, temperature, top-k and
 * nucleus (top-p), reproducible from a seed: the random draw for a position is a hash of
 * (seed, position), so the edge and the cloud sample the same token from the same
 * distribution, and a retried request gives the same answer. Penalties change greedy
 * decoding too (they move the arg max), as in vLLM and transformers.
 */
import { FailedPreconditionError, InvalidArgumentError } from "@tandem/common";
import type { ExitResult } from "../engine/segment-sessions.ts";
import { logSumExp } from "../numeric/log-sum-exp.ts";

export interface SamplingOptions {
  /** 0 means greedy. */
  temperature: number;
  /** Keep the smallest set of tokens whose probability reaches topP; 0 or 1 keeps all. */
  topP: number;
  seed: bigint;
  /** Keep only the topK most probable tokens (before top-p); 0 or undefined keeps all. */
  topK?: number;
  /**
   * Divides a positive logit (multiplies a negative one) of every token the sequence
   * holds, prompt included (transformers' and vLLM's repetition_penalty); 1 or undefined: none.
   */
  repetitionPenalty?: number;
  /** Subtracted from the logit of every token generated so far (OpenAI's); 0 or undefined: none. */
  presencePenalty?: number;
  /** Subtracted from each token's logit once per time it was generated (OpenAI's); 0 or undefined: none. */
  frequencyPenalty?: number;
}

/** The tokens of a sequence so far, for penalties: ids of positions [0, n), the first promptTokens of them the prompt's. */
export interface TokenHistory {
  ids: ArrayLike<number>;
  promptTokens: number;
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
  /** 0 keeps every token; more than the vocabulary is the same. */
  topK: { min: 0, max: 2 ** 31 - 1 },
  /** 1 is none; above 1 discourages repeats, below 1 encourages them. */
  repetitionPenalty: { min: 0.01, max: 10 },
  /** OpenAI's range. */
  presencePenalty: { min: -2, max: 2 },
  frequencyPenalty: { min: -2, max: 2 },
} as const;

/** The most alternatives a token's log-probabilities may list (OpenAI's limit). */
export const MAX_TOP_LOGPROBS = 20;

/**
 * Checks sampling options; errors name `${prefix}.temperature`, `${prefix}.top_p`,
 * `${prefix}.top_k`, `${prefix}.seed` or `${prefix}.<penalty>` (the bare names with an
 * empty prefix).
 */
export function validateSampling(options: SamplingOptions, prefix = "sampling"): void {
  const { temperature, topP, topK } = SAMPLING_LIMITS;
  const field = (name: string) => (prefix ? `${prefix}.${name}` : name);
  if (!(options.temperature >= temperature.min && options.temperature <= temperature.max))
    throw new InvalidArgumentError(
      field("temperature"),
      `must be in [${temperature.min}, ${temperature.max}], got ${options.temperature}`,
    );
  if (!(options.topP >= topP.min && options.topP <= topP.max))
    throw new InvalidArgumentError(
      field("top_p"),
      `must be in [${topP.min}, ${topP.max}], got ${options.topP}`,
    );
  const k = options.topK ?? 0;
  if (!(Number.isInteger(k) && k >= topK.min && k <= topK.max))
    throw new InvalidArgumentError(field("top_k"), `must be an integer in [0, ${topK.max}], got ${k}`);
  if (options.seed < 0n || options.seed >= 1n << 64n)
    throw new InvalidArgumentError(field("seed"), `must be an unsigned 64-bit integer, got ${options.seed}`);
  const penalties = [
    ["repetition_penalty", options.repetitionPenalty, SAMPLING_LIMITS.repetitionPenalty],
    ["presence_penalty", options.presencePenalty, SAMPLING_LIMITS.presencePenalty],
    ["frequency_penalty", options.frequencyPenalty, SAMPLING_LIMITS.frequencyPenalty],
  ] as const;
  for (const [name, value, range] of penalties)
    if (value !== undefined && !(value >= range.min && value <= range.max))
      throw new InvalidArgumentError(field(name), `must be in [${range.min}, ${range.max}], got ${value}`);
}

/**
 * A penalty as proto3 carries it: 0 is "not set" (none); any other value, NaN included, is
 * the caller's and validateSampling checks it.
 */
export function penaltyFromWire(value: number): number | undefined {
  return value === 0 ? undefined : value;
}

/** Whether any penalty would change a logit. */
export function hasPenalties(options: SamplingOptions): boolean {
  return (
    (options.repetitionPenalty !== undefined && options.repetitionPenalty !== 1) ||
    Boolean(options.presencePenalty) ||
    Boolean(options.frequencyPenalty)
  );
}

/**
 * `logits` with the penalties applied for `history`, as vLLM applies them: the
 * repetition penalty to every token the sequence holds (prompt and output), presence and
 * frequency penalties to the tokens generated (positions from promptTokens on).
 */
export function penalizedLogits(
  logits: Float32Array,
  options: SamplingOptions,
  history: TokenHistory,
): Float32Array {
  const out = Float32Array.from(logits);
  const generated = new Map<number, number>();
  const seen = new Set<number>();
  for (let i = 0; i < history.ids.length; i++) {
    const id = history.ids[i];
    if (id < 0 || id >= out.length) continue;
    seen.add(id);
    if (i >= history.promptTokens) generated.set(id, (generated.get(id) ?? 0) + 1);
  }
  const repetition = options.repetitionPenalty ?? 1;
  if (repetition !== 1)
    for (const id of seen) out[id] = out[id] > 0 ? out[id] / repetition : out[id] * repetition;
  const presence = options.presencePenalty ?? 0;
  const frequency = options.frequencyPenalty ?? 0;
  if (presence !== 0 || frequency !== 0)
    for (const [id, count] of generated) out[id] -= presence + frequency * count;
  return out;
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
  const topK = options.topK ? Math.min(options.topK, order.length) : order.length;
  let kept = 0;
  let mass = 0;
  while (kept < topK && (kept === 0 || mass < topP)) mass += probs[order[kept++]];
  let u = positionUniform(options.seed, position) * mass;
  for (let k = 0; k < kept; k++) {
    u -= probs[order[k]];
    if (u < 0) return { token: order[k], prob: probs[order[k]] / mass };
  }
  const last = order[kept - 1];
  return { token: last, prob: probs[last] / mass };
}

/** A token's log-probability under a head's untempered distribution, and the most probable tokens there. */
export interface TokenLogprobs {
  logprob: number;
  /** Most probable first; ties by the smaller id. */
  top: { token: number; logprob: number }[];
}

/** Log-softmax of `logits` at `token`, and the `top` most probable tokens (temperature 1, nothing cut). */
export function logprobsOf(logits: Float32Array, token: number, top: number): TokenLogprobs {
  const logZ = logSumExp(logits);
  // A partial selection: `top` is small (≤ 20) against a vocabulary of 10⁴–10⁵.
  const best: number[] = [];
  for (let i = 0; i < logits.length && top > 0; i++) {
    if (best.length === top && logits[i] <= logits[best[top - 1]]) continue;
    let at = best.length;
    while (at > 0 && logits[best[at - 1]] < logits[i]) at--;
    best.splice(at, 0, i);
    if (best.length > top) best.pop();
  }
  return {
    logprob: logits[token] - logZ,
    top: best.map((id) => ({ token: id, logprob: logits[id] - logZ })),
  };
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
  topLogprobs?: number,
  history?: TokenHistory,
): HeadAnswer {
  const logits = head.logits?.subarray(head.logits.length - vocabSize);
  const penalized = hasPenalties(sampling);
  if (!logits && (!isGreedy(sampling) || penalized || topLogprobs !== undefined))
    throw new FailedPreconditionError(
      isGreedy(sampling) ? (penalized ? "sampling" : "logprobs") : "sampling",
      `the head after layer ${head.afterLayer} was built without logits, so it can only answer greedy, without penalties or logprobs`,
    );
  let answer: HeadAnswer;
  if (penalized) {
    if (!history || history.ids.length !== position)
      throw new FailedPreconditionError(
        "sampling",
        `penalties need the token of each of the ${position} positions before this one, ${history?.ids.length ?? 0} are known`,
      );
    answer = sampleToken(penalizedLogits(logits!, sampling, history), sampling, position);
  } else if (isGreedy(sampling)) {
    answer = { token: head.token[head.token.length - 1], prob: head.prob[head.prob.length - 1] };
  } else {
    answer = sampleToken(logits!, sampling, position);
  }
  // Log-probabilities of the model's own distribution, before penalties and temperature (vLLM's default).
  if (topLogprobs !== undefined) answer.logprobs = logprobsOf(logits!, answer.token, topLogprobs);
  return answer;
}

/** A head's answer: the token, its probability as drawn, and (when asked) its log-probabilities. */
export interface HeadAnswer {
  token: number;
  prob: number;
  logprobs?: TokenLogprobs;
}
