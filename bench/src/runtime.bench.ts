/**
 * Benchmark `runtime`: prefill and decode speed, first-token latency and resident memory
 * of the ONNX Runtime engine on generated Llama checkpoints of ~1M, 25M and 110M
 * parameters, at 1 and 2 threads, for fp32, int8 and int4 weights; against the plain
 * TypeScript reference forward on the same weights; decode as a fraction of this
 * machine's memory-bandwidth limit (weight bytes read per token ÷ bandwidth).
 *
 * Each case runs in a child process so its RSS and thread pool are its own.
 * Usage: tandem bench runtime [--smoke]
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import {
  DEFAULT_QUANT_BLOCK_SIZE,
  loadCheckpoint,
  type ModelConfig,
  SegmentModel,
  SegmentSessions,
  segmentSpec,
  type WeightFormat,
} from "@tandem/runtime";
import { ReferenceModel, sizedLlamaSpec, writeRandomCheckpoint } from "@tandem/runtime/testing";
import type { BenchOptions, BenchResult } from "./bench-types.ts";
import { BENCH_MODELS_DIR, REPO_ROOT } from "./bench-paths.ts";
import { measureMemoryBandwidth } from "./memory-bandwidth.ts";
import { countParams, layerLinearParams } from "./model-arithmetic.ts";
import { median } from "./statistics.ts";

interface Case {
  modelDir: string;
  label: string;
  threads: number;
  weights: WeightFormat;
  promptTokens: number;
  decodeTokens: number;
}

interface CaseResult {
  params: number;
  threads: number;
  weights: WeightFormat;
  prompt_tokens: number;
  prefill_tokens_per_s: number;
  first_token_latency_ms: number;
  decode_tokens_per_s: number;
  decode_ms_p50: number;
  weight_bytes_per_token: number;
  rss_mb: number;
  graph_load_ms: number;
}

/** Bytes of weights a decode step reads: every linear layer and the LM head (not the embedding table). */
function weightBytesPerToken(config: ModelConfig, format: WeightFormat): number {
  const { hiddenSize: h, vocabSize: v, numLayers } = config;
  const linearParams = numLayers * layerLinearParams(config, config.numExpertsPerToken ?? 1) + v * h;
  const normParams = numLayers * 2 * h + h;
  const bytesPerParam = format === "fp32" ? 4 : format === "int8" ? 1 : 0.5;
  const scaleBytes = format === "fp32" ? 0 : (linearParams / DEFAULT_QUANT_BLOCK_SIZE) * 4;
  return linearParams * bytesPerParam + scaleBytes + normParams * 4;
}

async function runCase(c: Case): Promise<CaseResult> {
  const checkpoint = await loadCheckpoint(c.modelDir);
  const loadStart = performance.now();
  const model = await SegmentModel.load(
    checkpoint,
    segmentSpec({
      fromLayer: 0,
      toLayer: checkpoint.config.numLayers,
      finalHead: true,
      weightFormat: c.weights,
    }),
    {
      threads: c.threads,
    },
  );
  const graphLoadMs = performance.now() - loadStart;
  const sessions = new SegmentSessions(model);
  const prompt = Array.from(
    { length: c.promptTokens },
    (_, i) => (i * 7919 + 13) % checkpoint.config.vocabSize,
  );

  // Warm-up: the first run of a session allocates and packs weights.
  sessions.open("warmup");
  await sessions.forward("warmup", { ids: prompt.slice(0, 8) });
  await sessions.forward("warmup", { ids: [1] });
  sessions.release("warmup");

  sessions.open("bench");
  const prefillStart = performance.now();
  let step = await sessions.forward("bench", { ids: prompt });
  const prefillMs = performance.now() - prefillStart;
  const stepMs: number[] = [];
  for (let i = 0; i < c.decodeTokens; i++) {
    const start = performance.now();
    step = await sessions.forward("bench", { ids: [step.exits[0].token[0]] });
    stepMs.push(performance.now() - start);
  }
  const rssMb = process.memoryUsage().rss / 2 ** 20;
  await model.release();
  const decodeSeconds = stepMs.reduce((a, b) => a + b, 0) / 1000;
  return {
    params: countParams(checkpoint.config),
    threads: c.threads,
    weights: c.weights,
    prompt_tokens: c.promptTokens,
    prefill_tokens_per_s: c.promptTokens / (prefillMs / 1000),
    first_token_latency_ms: prefillMs,
    decode_tokens_per_s: c.decodeTokens / decodeSeconds,
    decode_ms_p50: median(stepMs),
    weight_bytes_per_token: weightBytesPerToken(checkpoint.config, c.weights),
    rss_mb: rssMb,
    graph_load_ms: graphLoadMs,
  };
}

/** Decode tokens/s of the plain-TypeScript reference forward on the same weights. */
async function referenceDecode(
  modelDir: string,
  promptTokens: number,
  decodeTokens: number,
): Promise<number> {
  const checkpoint = await loadCheckpoint(modelDir);
  const reference = new ReferenceModel(checkpoint.config, checkpoint.weights);
  const layers = checkpoint.config.numLayers;
  const cache = reference.newCache();
  const prompt = Array.from(
    { length: promptTokens },
    (_, i) => (i * 7919 + 13) % checkpoint.config.vocabSize,
  );
  reference.forward({ ids: prompt }, 0, layers, cache);
  const start = performance.now();
  for (let i = 0; i < decodeTokens; i++)
    reference.forward({ ids: [(i * 31) % checkpoint.config.vocabSize] }, 0, layers, cache);
  return decodeTokens / ((performance.now() - start) / 1000);
}

async function runChild(c: Case): Promise<CaseResult> {
  const { stdout } = await promisify(execFile)(
    process.execPath,
    [join(REPO_ROOT, "bin", "tandem.mjs"), "bench", "runtime", "--case", JSON.stringify(c)],
    {
      maxBuffer: 1 << 20,
    },
  );
  const lines = stdout.trim().split("\n");
  return JSON.parse(lines[lines.length - 1]) as CaseResult;
}

async function ensureModel(label: string, targetParams: number): Promise<string> {
  const dir = join(BENCH_MODELS_DIR, label);
  if (!existsSync(join(dir, "config.json"))) {
    process.stderr.write(`runtime bench: writing ${label} checkpoint\n`);
    await writeRandomCheckpoint(dir, { ...sizedLlamaSpec(targetParams), seed: 1 });
  }
  return dir;
}

export default async function runtimeBenchmark(options: BenchOptions<"runtime">): Promise<BenchResult> {
  if (options.options.case)
    return (await runCase(JSON.parse(options.options.case) as Case)) as unknown as BenchResult;

  const sizes = options.smoke
    ? [{ label: "1M", params: 1e6 }]
    : [
        { label: "1M", params: 1e6 },
        { label: "25M", params: 25e6 },
        { label: "110M", params: 110e6 },
      ];
  const formats: WeightFormat[] = options.smoke ? ["fp32", "int4"] : ["fp32", "int8", "int4"];
  const threadCounts = options.smoke ? [1] : [1, 2];
  const promptTokens = options.smoke ? 16 : 128;
  const decodeTokens = options.smoke ? 8 : 64;

  const bandwidth = await measureMemoryBandwidth(options.smoke ? { bufferMb: 64, repeats: 2 } : {});
  process.stderr.write(`runtime bench: memory read bandwidth ${bandwidth.readGbPerS.toFixed(1)} GB/s\n`);
  const rows: Record<string, unknown>[] = [];
  for (const size of sizes) {
    const modelDir = await ensureModel(size.label, size.params);
    const referenceTokens = size.params > 50e6 ? 3 : options.smoke ? 4 : 16;
    const reference = await referenceDecode(modelDir, options.smoke ? 8 : 32, referenceTokens);
    for (const weights of formats) {
      for (const threads of threadCounts) {
        const result = await runChild({
          modelDir,
          label: size.label,
          threads,
          weights,
          promptTokens,
          decodeTokens,
        });
        // The limit: a decode step cannot go faster than reading its weights once from memory.
        const limitTokensPerS = (bandwidth.readGbPerS * 1e9) / result.weight_bytes_per_token;
        const row = {
          model: size.label,
          ...result,
          decode_bandwidth_fraction: result.decode_tokens_per_s / limitTokensPerS,
          reference_decode_tokens_per_s: reference,
        };
        process.stderr.write(`runtime bench: ${JSON.stringify(row)}\n`);
        rows.push(row);
      }
    }
  }
  return { name: "runtime", memory_bandwidth_gb_s: bandwidth.readGbPerS, memory_bandwidth: bandwidth, rows };
}
