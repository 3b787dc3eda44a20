/**
 * Benchmark `codec`: for each hidden-state codec and hidden size, bytes per token,
 * relative RMSE and max abs error on activation-like data (Gaussian with outlier
 * channels, as LLM hidden states have), and encode/decode throughput.
 */
import { CODEC_NAMES, getCodec } from "../runtime/src/codec/hidden-state-codec.ts";
import type { BenchOptions, BenchResult } from "./bench-types.ts";

function activations(count: number, dim: number): Float32Array {
  let state = 12345;
  const uniform = () => ((state = (state * 1664525 + 1013904223) >>> 0) + 0.5) / 2 ** 32;
  const out = new Float32Array(count * dim);
  for (let i = 0; i < out.length; i++) {
    const g = Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
    out[i] = i % dim < 4 ? g * 30 : g; // a few outlier channels
  }
  return out;
}

function timeIt(run: () => void, minMs: number): number {
  let iterations = 0;
  const start = performance.now();
  while (performance.now() - start < minMs) {
    run();
    iterations++;
  }
  return (performance.now() - start) / iterations;
}

export default async function codecBenchmark(options: BenchOptions): Promise<BenchResult> {
  const dims = options.smoke ? [256] : [256, 768, 2048];
  const tokens = options.smoke ? 16 : 256;
  const minMs = options.smoke ? 20 : 300;
  const rows = [];
  for (const dim of dims) {
    const x = activations(tokens, dim);
    for (const name of CODEC_NAMES) {
      const codec = getCodec(name);
      const encoded = codec.encode(x, tokens, dim);
      const y = codec.decode(encoded, tokens, dim);
      let squaredError = 0;
      let squaredNorm = 0;
      let maxAbsError = 0;
      for (let i = 0; i < x.length; i++) {
        const e = y[i] - x[i];
        squaredError += e * e;
        squaredNorm += x[i] * x[i];
        maxAbsError = Math.max(maxAbsError, Math.abs(e));
      }
      const encodeMs = timeIt(() => codec.encode(x, tokens, dim), minMs);
      const decodeMs = timeIt(() => codec.decode(encoded, tokens, dim), minMs);
      rows.push({
        codec: name,
        dim,
        bytes_per_token: encoded.length / tokens,
        relative_rmse: Math.sqrt(squaredError / squaredNorm),
        max_abs_error: maxAbsError,
        encode_tokens_per_s: tokens / (encodeMs / 1000),
        decode_tokens_per_s: tokens / (decodeMs / 1000),
        encode_mb_per_s: x.byteLength / 1e6 / (encodeMs / 1000),
        decode_mb_per_s: x.byteLength / 1e6 / (decodeMs / 1000),
      });
      process.stderr.write(`codec bench: ${JSON.stringify(rows[rows.length - 1])}\n`);
    }
  }
  return { name: "codec", tokens, rows };
}
