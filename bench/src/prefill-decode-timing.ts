/**
 * One way of timing an engine's prefill and decode, shared by every engine the `runtime`
 * benchmark compares, as llama-bench times llama.cpp: a warm-up of the same work first,
 * then several rounds, each figure the median of its rounds with every round's value
 * kept for the spread.
 *
 * The warm-up runs the whole prompt, not a few tokens of it: an engine's first run at a
 * shape allocates and first touches its buffers (in ONNX Runtime's profile the operators
 * other than the matrix products took 3× their steady time there; llama.cpp reserves its
 * compute buffer at load), and Tandem's first 128-token prefill ran at 36–80% of the steady
 * figure. That first prefill is what a process's first request costs, so it is reported
 * beside the steady figure (`cold_prefill_tokens_per_s`), not dropped.
 */
import { median } from "./statistics.ts";

/** The engine under test, driven one call at a time. */
export interface TimedEngine {
  /** Starts an empty context (a new session, a cleared cache). */
  reset(): Promise<void>;
  /** Runs the prompt from an empty context; returns the next token. */
  prefill(prompt: readonly number[]): Promise<number>;
  /** Runs one token; returns the next. */
  decode(token: number): Promise<number>;
}

export interface PrefillDecodeTiming {
  prompt_tokens: number;
  decode_tokens: number;
  /** Median over the rounds. */
  prefill_tokens_per_s: number;
  /** The warm-up's prefill: the first at this prompt length in the process. */
  cold_prefill_tokens_per_s: number;
  /** Median over the rounds: the prompt up to its first token. */
  first_token_latency_ms: number;
  /** Median over the rounds of each round's decode tokens / its decode seconds. */
  decode_tokens_per_s: number;
  /** The median decode step over every round's steps. */
  decode_ms_p50: number;
  /** Each round's figures, in order: the run-to-run spread within the process. */
  prefill_tokens_per_s_rounds: number[];
  decode_tokens_per_s_rounds: number[];
}

/** Options of timePrefillDecode. */
export interface PrefillDecodeOptions {
  prompt: readonly number[];
  decodeTokens: number;
  /** Timed rounds after the warm-up. @default 3 */
  rounds?: number;
}

export async function timePrefillDecode(
  engine: TimedEngine,
  options: PrefillDecodeOptions,
): Promise<PrefillDecodeTiming> {
  const { prompt, decodeTokens } = options;
  const rounds = options.rounds ?? 3;
  if (!Number.isInteger(rounds) || rounds < 1)
    throw new RangeError(`rounds must be a positive integer, got ${rounds}`);

  await engine.reset();
  const coldStart = performance.now();
  const warm = await engine.prefill(prompt);
  const coldMs = performance.now() - coldStart;
  await engine.decode(warm);

  const prefillMs: number[] = [];
  const decodeRates: number[] = [];
  const stepMs: number[] = [];
  for (let round = 0; round < rounds; round++) {
    await engine.reset();
    const start = performance.now();
    let token = await engine.prefill(prompt);
    prefillMs.push(performance.now() - start);
    let decodeMs = 0;
    for (let i = 0; i < decodeTokens; i++) {
      const stepStart = performance.now();
      token = await engine.decode(token);
      const ms = performance.now() - stepStart;
      stepMs.push(ms);
      decodeMs += ms;
    }
    decodeRates.push(decodeTokens / (decodeMs / 1000));
  }
  const perSecond = (ms: number) => prompt.length / (ms / 1000);
  return {
    prompt_tokens: prompt.length,
    decode_tokens: decodeTokens,
    prefill_tokens_per_s: perSecond(median(prefillMs)),
    cold_prefill_tokens_per_s: perSecond(coldMs),
    first_token_latency_ms: median(prefillMs),
    decode_tokens_per_s: median(decodeRates),
    decode_ms_p50: median(stepMs),
    prefill_tokens_per_s_rounds: prefillMs.map(perSecond),
    decode_tokens_per_s_rounds: decodeRates,
  };
}
