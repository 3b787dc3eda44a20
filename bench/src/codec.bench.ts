/**
 * Benchmark `codec`: for each hidden-state codec (and int4 at two group sizes) and
 * hidden size, the bytes per token, the error on activation-like data, and the encode
 * and decode speed.
 *
 * Data: `tokens` tokens of Gaussian channels (σ varying per token, log-σ spread 0.5)
 * plus 6 "massive activation" channels of fixed sign, ~40σ (as LLM hidden states have;
 * see runtime/src/codec/synthetic-activations.ts).
 *
 * Row fields:
 *   bytes_per_token, bits_per_value     the exact payload size
 *   relative_rmse                       ‖x̂ − x‖ / ‖x‖ over all values
 *   max_abs_error                       max |x̂ − x|
 *   max_error_over_absmax               max over tokens of max|x̂ − x| / absmax(token)
 *   encode_* / decode_*                 throughput on batches of `tokens` tokens; MB are
 *                                       of fp32 hidden state (4·dim bytes per token)
 *   encode_us_1_token / decode_us_1_token   latency of one call for a single token (the
 *                                       escalation hot path), microseconds
 * Timings are the median of several samples, each repeating the call for a while.
 *
 * Args: --dims=256,768 (hidden sizes), --tokens=N (batch size).
 */
import { activations, CODEC_NAMES, getCodec, type HiddenStateCodec } from "@tandem/runtime";
import type { BenchOptions, BenchResult } from "./bench-types.ts";
import { median } from "./statistics.ts";

interface Timing {
  samples: number;
  sampleMs: number;
}

/** Median milliseconds per call of `run`, after a warm-up of one sample's length. */
function msPerCall(run: () => unknown, timing: Timing): number {
  const warmUntil = performance.now() + timing.sampleMs;
  while (performance.now() < warmUntil) run();
  const perCall: number[] = [];
  for (let s = 0; s < timing.samples; s++) {
    let calls = 0;
    const start = performance.now();
    let now = start;
    while (now - start < timing.sampleMs) {
      run();
      calls++;
      now = performance.now();
    }
    perCall.push((now - start) / calls);
  }
  return median(perCall);
}

function errors(x: Float32Array, y: Float32Array, dim: number) {
  let squaredError = 0;
  let squaredNorm = 0;
  let maxAbsError = 0;
  let maxErrorOverAbsmax = 0;
  for (let t = 0; t < x.length / dim; t++) {
    let absmax = 0;
    let tokenMaxError = 0;
    for (let i = t * dim; i < (t + 1) * dim; i++) {
      const e = Math.abs(y[i] - x[i]);
      squaredError += e * e;
      squaredNorm += x[i] * x[i];
      tokenMaxError = Math.max(tokenMaxError, e);
      absmax = Math.max(absmax, Math.abs(x[i]));
    }
    maxAbsError = Math.max(maxAbsError, tokenMaxError);
    if (absmax > 0) maxErrorOverAbsmax = Math.max(maxErrorOverAbsmax, tokenMaxError / absmax);
  }
  return {
    relativeRmse: Math.sqrt(squaredError / squaredNorm),
    maxAbsError,
    maxErrorOverAbsmax,
  };
}

const round = (value: number, digits: number): number => Number(value.toPrecision(digits));

export default async function codecBenchmark(options: BenchOptions<"codec">): Promise<BenchResult> {
  const dims = options.options.dims ?? (options.smoke ? [256] : [256, 768, 2048]);
  const tokens = options.options.tokens ?? (options.smoke ? 8 : 64);
  const timing: Timing = options.smoke ? { samples: 3, sampleMs: 5 } : { samples: 7, sampleMs: 60 };

  const variants: { codec: HiddenStateCodec; groupSize: number | null }[] = [
    ...CODEC_NAMES.map((name) => ({
      codec: getCodec(name),
      groupSize: name === "int4" ? 32 : null,
    })),
    { codec: getCodec("int4", { groupSize: 128 }), groupSize: 128 },
  ];
  const rows = [];
  for (const dim of dims) {
    const x = activations(tokens, dim, {
      seed: dim,
      outlierChannels: 6,
      outlierScale: 40,
      tokenScaleSpread: 0.5,
    });
    const one = x.slice(0, dim);
    const fp32MB = (tokens * dim * 4) / 1e6;
    for (const { codec, groupSize } of variants) {
      const encoded = codec.encode(x, tokens, dim);
      const encodedOne = codec.encode(one, 1, dim);
      const decoded = codec.decode(encoded, tokens, dim);
      const encodeMs = msPerCall(() => codec.encode(x, tokens, dim), timing);
      const decodeMs = msPerCall(() => codec.decode(encoded, tokens, dim), timing);
      const encodeOneMs = msPerCall(() => codec.encode(one, 1, dim), timing);
      const decodeOneMs = msPerCall(() => codec.decode(encodedOne, 1, dim), timing);
      const bytesPerToken = encoded.length / tokens;
      const error = errors(x, decoded, dim);
      const row = {
        codec: codec.name,
        group_size: groupSize,
        dim,
        bytes_per_token: bytesPerToken,
        bits_per_value: round((bytesPerToken * 8) / dim, 4),
        relative_rmse: round(error.relativeRmse, 4),
        max_abs_error: round(error.maxAbsError, 4),
        max_error_over_absmax: round(error.maxErrorOverAbsmax, 4),
        encode_tokens_per_s: Math.round(tokens / (encodeMs / 1000)),
        encode_mb_per_s: Math.round(fp32MB / (encodeMs / 1000)),
        decode_tokens_per_s: Math.round(tokens / (decodeMs / 1000)),
        decode_mb_per_s: Math.round(fp32MB / (decodeMs / 1000)),
        encode_us_1_token: round(encodeOneMs * 1000, 3),
        decode_us_1_token: round(decodeOneMs * 1000, 3),
      };
      rows.push(row);
      process.stderr.write(
        `codec ${codec.name}${groupSize ? `/g${groupSize}` : ""} dim ${dim}: ${row.bytes_per_token} B/token, ` +
          `rel RMSE ${row.relative_rmse}, encode ${row.encode_mb_per_s} MB/s, decode ${row.decode_mb_per_s} MB/s\n`,
      );
    }
  }
  return {
    name: "codec",
    smoke: options.smoke,
    tokens,
    data: "Gaussian channels, per-token log-σ spread 0.5, 6 outlier channels ~40σ",
    throughput_mb: "fp32 hidden-state megabytes (4·dim bytes per token)",
    node: process.version,
    rows,
  };
}
