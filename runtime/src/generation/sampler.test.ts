/** The sampler's parts that answer for the APIs' options: penalties, top-k, log-probabilities. */
import { describe, expect, it } from "vitest";
import {
  logprobsOf,
  penalizedLogits,
  sampleToken,
  validateSampling,
  type SamplingOptions,
} from "./sampler.ts";

const BASE: SamplingOptions = { temperature: 0, topP: 1, seed: 0n };

describe("penalties", () => {
  const logits = Float32Array.from([2, -1, 0.5, 3, -2]);
  // Prompt: tokens 0 and 1; generated: 3 twice, then 4.
  const history = { ids: [0, 1, 3, 3, 4], promptTokens: 2 };

  it("divide positive logits and multiply negative ones of every token in the sequence, prompt included (repetition)", () => {
    const out = penalizedLogits(logits, { ...BASE, repetitionPenalty: 2 }, history);
    expect(Array.from(out)).toEqual([1, -2, 0.5, 1.5, -4]);
  });

  it("subtract once per generated token (presence) and once per occurrence (frequency), never for the prompt's", () => {
    const out = penalizedLogits(logits, { ...BASE, presencePenalty: 0.5, frequencyPenalty: 0.25 }, history);
    expect(Array.from(out)).toEqual([2, -1, 0.5, 3 - 0.5 - 0.5, -2 - 0.5 - 0.25]);
  });

  it("move greedy's arg max", () => {
    const penalized = penalizedLogits(logits, { ...BASE, frequencyPenalty: 1 }, history);
    expect(sampleToken(logits, BASE, 0).token).toBe(3);
    expect(sampleToken(penalized, BASE, 0).token).toBe(0);
  });

  it("are refused out of their ranges, by name", () => {
    expect(() => validateSampling({ ...BASE, presencePenalty: 2.5 })).toThrow(
      "sampling.presence_penalty: must be in [-2, 2], got 2.5",
    );
    expect(() => validateSampling({ ...BASE, frequencyPenalty: -3 }, "")).toThrow(/^frequency_penalty: /);
    expect(() => validateSampling({ ...BASE, repetitionPenalty: 0 })).toThrow(
      /repetition_penalty: must be in/,
    );
  });
});

describe("top-k", () => {
  it("draws only among the k most probable tokens", () => {
    const logits = Float32Array.from([1, 1.1, 1.2, 1.3, 5]);
    const drawn = new Set<number>();
    for (let position = 0; position < 200; position++)
      drawn.add(sampleToken(logits, { temperature: 5, topP: 1, seed: 9n, topK: 2 }, position).token);
    expect([...drawn].sort()).toEqual([3, 4]);
    expect(() => validateSampling({ ...BASE, topK: -1 })).toThrow(/^sampling\.top_k: /);
  });
});

describe("log-probabilities", () => {
  it("are the log-softmax of the logits, with the most probable tokens first", () => {
    const logits = Float32Array.from([1, 3, 2, 3]);
    const z = Math.log(Math.exp(1) + 2 * Math.exp(3) + Math.exp(2));
    const result = logprobsOf(logits, 2, 3);
    expect(result.logprob).toBeCloseTo(2 - z, 6);
    // Ties keep the smaller id first.
    expect(result.top.map((t) => t.token)).toEqual([1, 3, 2]);
    expect(result.top[0].logprob).toBeCloseTo(3 - z, 6);
    expect(logprobsOf(logits, 0, 0).top).toEqual([]);
  });
});
