/**
 * Benchmark `runtime`: prefill and decode speed, first-token latency and resident memory
 * of the ONNX Runtime engine on generated Llama checkpoints of ~1M, 25M and 110M
 * parameters, at 1 and 2 threads, for fp32, int8 and int4 weights; against the plain
 * TypeScript reference forward on the same weights; decode as a fraction of this
 * machine's memory-bandwidth limit (weight bytes read per token ÷ bandwidth); and against
 * llama.cpp (node-llama-cpp's prebuilt CPU build, tools/llama-cpp/) on the same weights
 * written as GGUF — fp32 as F32, int8 as Q8_0, int4 as Q4_0 — same prompt, same threads.
 *
 * Both engines are timed alike (prefill-decode-timing.ts), in the deployed environment
 * (huge pages for malloc, HUGE_PAGES_ENV): a warm-up of the whole prompt,
 * then five rounds (one with --smoke), medians reported with each round's figure.
 * Each case runs in a child process so its RSS and thread pool are its own.
 * int4 runs with its LM head in 8 bits by default, as llama.cpp's Q4_0 file keeps its head
 * (--int4-head-bits 4,8 runs the edge's 4-bit head beside it).
 * Usage: tandem bench runtime [--smoke]
 */
import { readFileSync } from "node:fs";
import {
  DEFAULT_QUANT_BLOCK_SIZE,
  defaultInt4HeadBits,
  headWeightBytes,
  type Int4HeadBits,
  loadCheckpoint,
  type ModelConfig,
  SegmentModel,
  SegmentSessions,
  segmentSpec,
  Tokenizer,
  type WeightFormat,
} from "@tandem/runtime";
import { REAL_MODEL_CONFIGS, ReferenceModel } from "@tandem/runtime/testing";
import { UsageError } from "@tandem/common";
import type { BenchOptions, BenchResult } from "./bench-types.ts";
import { DEMO_HELDOUT_TEXT, DEMO_MODEL } from "./bench-paths.ts";
import { ensureCheckpointGguf } from "./llama-cpp/bench-gguf.ts";
import type { GgufFileType } from "./llama-cpp/gguf-writer.ts";
import { LlamaCppModel, type LlamaCppMeasurement, measureLlamaCpp } from "./llama-cpp/llama-cpp-runner.ts";
import { runCaseProcess } from "./case-process.ts";
import { measureMemoryBandwidth } from "./memory-bandwidth.ts";
import { ensureRealShapeCheckpoint, isRealModelName } from "./real-shape-checkpoints.ts";
import { countParams, layerLinearParams } from "./model-arithmetic.ts";
import { ensureSizedModel, isSizedModelName, SIZED_MODELS } from "./sized-models.ts";
import { type PrefillDecodeTiming, timePrefillDecode } from "./prefill-decode-timing.ts";

/** One measurement, run in a child process: Tandem's engine, or llama.cpp on a GGUF. */
type Case = TandemCase | LlamaCppCase;

interface TandemCase {
  engine: "tandem";
  modelDir: string;
  label: string;
  threads: number;
  weights: WeightFormat;
  /** Quantization block size of int8/int4 weights. */
  blockSize: number;
  /** Bits of int4's LM head (ignored by the other formats). */
  int4HeadBits: Int4HeadBits;
  promptTokens: number;
  decodeTokens: number;
  /** Timed rounds after the warm-up (prefill-decode-timing.ts). */
  rounds: number;
}

interface LlamaCppCase {
  engine: "llama.cpp";
  gguf: string;
  threads: number;
  promptTokens: number;
  decodeTokens: number;
  rounds: number;
}

/** The GGUF type llama.cpp runs for each of Tandem's weight formats. */
const GGUF_TYPE_OF: Record<WeightFormat, GgufFileType> = {
  fp32: "F32",
  int8: "Q8_0",
  w8a8: "Q8_0",
  int4: "Q4_0",
};

/** Bits per weight of each GGUF type: Q8_0 and Q4_0 are blocks of 32 with an fp16 scale. */
const GGUF_BITS: Record<GgufFileType, number> = { F32: 32, Q8_0: 8.5, Q4_0: 4.5 };

/** The benchmark's prompt, for both engines: token i is (i·7919 + 13) mod vocab. */
const benchPrompt = (length: number, vocabSize: number): number[] =>
  Array.from({ length }, (_, i) => (i * 7919 + 13) % vocabSize);

interface CaseResult extends PrefillDecodeTiming {
  params: number;
  threads: number;
  weights: WeightFormat;
  /** Quantization block size (int8/int4; null for fp32). */
  block_size: number | null;
  /** Bits of the LM head (int4; null for the other formats). */
  int4_head_bits: Int4HeadBits | null;
  weight_bytes_per_token: number;
  rss_mb: number;
  graph_load_ms: number;
}

/** The quantization of a case: its block size and int4's head bits. */
interface Quantization {
  quantBlockSize: number;
  int4HeadBits: Int4HeadBits;
}

/** The head bits a whole-model segment (it has the final head) keeps unless told. */
const WHOLE_MODEL_INT4_HEAD_BITS = defaultInt4HeadBits({ finalHead: true });

/** Bytes of weights a decode step reads: every linear layer and the LM head (not the embedding table). */
function weightBytesPerToken(config: ModelConfig, format: WeightFormat, quantization: Quantization): number {
  const { hiddenSize: h, vocabSize: v, numLayers } = config;
  const layerParams = numLayers * layerLinearParams(config, config.numExpertsPerToken ?? 1);
  const normParams = numLayers * 2 * h + h;
  // The layers by parameter count (w8a8: a byte per weight; its per-channel scales are
  // under 0.2% more); the head as the graph stores it.
  const layerBytes =
    format === "fp32"
      ? layerParams * 4
      : format === "w8a8"
        ? layerParams
        : layerParams * ((format === "int8" ? 1 : 0.5) + 4 / quantization.quantBlockSize);
  const linearBytes =
    layerBytes + headWeightBytes(v, h, { weightFormat: format, ...quantization, finalHead: true });
  return linearBytes + normParams * 4;
}

/** The whole model as one segment with its final head, evaluated at the last or every position. */
function wholeModelSpec(
  config: ModelConfig,
  weightFormat: WeightFormat,
  quantization: Quantization,
  positions: "last" | "all",
) {
  return segmentSpec({
    fromLayer: 0,
    toLayer: config.numLayers,
    finalHead: true,
    positions,
    weightFormat,
    ...quantization,
  });
}

async function runCase(c: TandemCase): Promise<CaseResult> {
  const checkpoint = await loadCheckpoint(c.modelDir);
  const quantization = { quantBlockSize: c.blockSize, int4HeadBits: c.int4HeadBits };
  const loadStart = performance.now();
  const model = await SegmentModel.load(
    checkpoint,
    wholeModelSpec(checkpoint.config, c.weights, quantization, "last"),
    { threads: c.threads },
  );
  const graphLoadMs = performance.now() - loadStart;
  const sessions = new SegmentSessions(model);
  const prompt = benchPrompt(c.promptTokens, checkpoint.config.vocabSize);

  const timing = await timePrefillDecode(
    {
      // A new session each round (release of one not open is a no-op): its cache starts empty.
      reset: async () => {
        sessions.release("bench");
        sessions.open("bench");
      },
      prefill: async (ids) => (await sessions.forward("bench", { ids: [...ids] })).exits[0].token[0],
      decode: async (token) => (await sessions.forward("bench", { ids: [token] })).exits[0].token[0],
    },
    { prompt, decodeTokens: c.decodeTokens, rounds: c.rounds },
  );
  const rssMb = process.memoryUsage().rss / 2 ** 20;
  await model.release();
  return {
    params: countParams(checkpoint.config),
    threads: c.threads,
    weights: c.weights,
    block_size: c.weights === "fp32" ? null : c.blockSize,
    int4_head_bits: c.weights === "int4" ? c.int4HeadBits : null,
    ...timing,
    weight_bytes_per_token: weightBytesPerToken(checkpoint.config, c.weights, quantization),
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

async function runLlamaCppCase(c: LlamaCppCase): Promise<LlamaCppMeasurement> {
  return measureLlamaCpp({
    ggufPath: c.gguf,
    threads: c.threads,
    promptTokens: c.promptTokens,
    prompt: (vocabSize) => benchPrompt(c.promptTokens, vocabSize),
    decodeTokens: c.decodeTokens,
    rounds: c.rounds,
  });
}

interface QualityRow {
  engine: "tandem" | "llama.cpp";
  weights: WeightFormat;
  /** Tandem's quantization block size (int8/int4). */
  block_size?: number;
  /** Bits of Tandem's int4 LM head. */
  int4_head_bits?: Int4HeadBits;
  gguf_type?: GgufFileType;
  /** Bits per weight of the format's linear weights: values and their block scales. */
  bits_per_weight: number;
  /** Share of positions whose greedy token equals Tandem fp32's. */
  agreement_with_fp32: number;
}

/**
 * What each format costs in quality, on the one model here whose predictions mean
 * something (the trained demo model; a random model's near-flat distributions flip on any
 * error): the greedy token at every position of its held-out text, teacher forced, against
 * Tandem's fp32 — for Tandem at each block size and for llama.cpp's GGUF types. Both
 * engines' fp32 should agree on (nearly) every position; the quantized rows then say
 * whether a block size gives up more than llama.cpp's own format does.
 */
async function demoModelQuality(
  positions: number,
  formats: WeightFormat[],
  blockSizes: number[],
  int4HeadBits: Int4HeadBits[],
): Promise<QualityRow[]> {
  const checkpoint = await loadCheckpoint(DEMO_MODEL);
  const text = readFileSync(DEMO_HELDOUT_TEXT, "utf8").slice(0, 40_000);
  const ids = (await Tokenizer.forCheckpoint(checkpoint)).encode(text).slice(0, positions);
  const tandemTokens = async (weightFormat: WeightFormat, quantization: Quantization): Promise<number[]> => {
    const model = await SegmentModel.load(
      checkpoint,
      wholeModelSpec(checkpoint.config, weightFormat, quantization, "all"),
      { threads: 2 },
    );
    try {
      const sessions = new SegmentSessions(model);
      sessions.open("quality");
      const step = await sessions.forward("quality", { ids });
      return Array.from(step.exits[0].token);
    } finally {
      await model.release();
    }
  };
  const reference = await tandemTokens("fp32", {
    quantBlockSize: DEFAULT_QUANT_BLOCK_SIZE,
    int4HeadBits: WHOLE_MODEL_INT4_HEAD_BITS,
  });
  const agreement = (tokens: number[]) =>
    tokens.filter((token, i) => token === reference[i]).length / reference.length;
  // w8a8: a byte per weight, and one scale per output channel (a few hundredths of a bit).
  const bits = (weights: WeightFormat, blockSize: number) =>
    weights === "fp32" ? 32 : weights === "w8a8" ? 8 : (weights === "int8" ? 8 : 4) + 32 / blockSize;
  const rows: QualityRow[] = [];
  for (const weights of formats) {
    for (const blockSize of weights === "fp32" ? [] : blockSizes)
      for (const headBits of headBitsToRun(weights, int4HeadBits))
        rows.push({
          engine: "tandem",
          weights,
          block_size: blockSize,
          ...(weights === "int4" ? { int4_head_bits: headBits } : {}),
          bits_per_weight: bits(weights, blockSize),
          agreement_with_fp32: agreement(
            await tandemTokens(weights, { quantBlockSize: blockSize, int4HeadBits: headBits }),
          ),
        });
    const ggufType = GGUF_TYPE_OF[weights];
    // int8 and w8a8 share Q8_0: one row for it.
    if (rows.some((row) => row.gguf_type === ggufType)) continue;
    const model = await LlamaCppModel.open({
      ggufPath: await ensureCheckpointGguf(DEMO_MODEL, ggufType),
      threads: 2,
      contextSize: ids.length,
      kvCacheType: "F32",
    });
    try {
      rows.push({
        engine: "llama.cpp",
        weights,
        gguf_type: ggufType,
        bits_per_weight: GGUF_BITS[ggufType],
        agreement_with_fp32: agreement(await model.greedyAtEveryPosition(ids)),
      });
    } finally {
      await model.close();
    }
  }
  return rows;
}

/** The head bits a format runs at: each asked for in int4, the one default elsewhere (unused there). */
const headBitsToRun = (weights: WeightFormat, int4HeadBits: Int4HeadBits[]): Int4HeadBits[] =>
  weights === "int4" ? int4HeadBits : [WHOLE_MODEL_INT4_HEAD_BITS];

/** Runs a case in a child process of its own (case-process.ts). */
const runChild = (c: Case): Promise<unknown> => runCaseProcess("runtime", c, 1 << 20);

/** The model's directory, its checkpoint written first when missing: a size or a real shape. */
async function ensureModel(label: string): Promise<string> {
  const log = (line: string) => process.stderr.write(`runtime bench: ${line}\n`);
  return isRealModelName(label) ? ensureRealShapeCheckpoint(label, log) : ensureSizedModel(label, log);
}

export default async function runtimeBenchmark(options: BenchOptions<"runtime">): Promise<BenchResult> {
  if (options.options.case) {
    const c = JSON.parse(options.options.case) as Case;
    const result = c.engine === "tandem" ? await runCase(c) : await runLlamaCppCase(c);
    return result as unknown as BenchResult;
  }

  const models = options.smoke ? ["1M"] : (options.options.models ?? Object.keys(SIZED_MODELS));
  for (const [i, name] of models.entries())
    if (!isSizedModelName(name) && !isRealModelName(name))
      throw new UsageError(
        `models[${i}]`,
        `no model "${name}"; known: ${[...Object.keys(SIZED_MODELS), ...Object.keys(REAL_MODEL_CONFIGS)].join(", ")}`,
      );
  const formats: WeightFormat[] =
    options.options.formats ?? (options.smoke ? ["fp32", "w8a8", "int4"] : ["fp32", "int8", "w8a8", "int4"]);
  const blockSizes = options.options.blockSizes ?? [DEFAULT_QUANT_BLOCK_SIZE];
  const int4HeadBits = options.options.int4HeadBits ?? [WHOLE_MODEL_INT4_HEAD_BITS];
  const threadCounts = options.smoke ? [1] : [1, 2];
  const promptTokens = options.smoke ? 16 : 128;
  const decodeTokens = options.smoke ? 8 : 64;
  const rounds = options.smoke ? 1 : 5;

  const bandwidth = await measureMemoryBandwidth(options.smoke ? { bufferMb: 64, repeats: 2 } : {});
  process.stderr.write(`runtime bench: memory read bandwidth ${bandwidth.readGbPerS.toFixed(1)} GB/s\n`);
  const rows: Record<string, unknown>[] = [];
  const anchor: Record<string, unknown>[] = [];
  for (const label of models) {
    const modelDir = await ensureModel(label);
    const params = countParams((await loadCheckpoint(modelDir)).config);
    // The plain-TypeScript forward holds every weight in fp32 and runs ~100× slower: a few
    // tokens up to the 110M model, none past it.
    const referenceTokens = params > 200e6 ? 0 : params > 50e6 ? 3 : options.smoke ? 4 : 16;
    const reference =
      referenceTokens > 0 ? await referenceDecode(modelDir, options.smoke ? 8 : 32, referenceTokens) : null;
    for (const weights of formats) {
      const gguf = await ensureCheckpointGguf(modelDir, GGUF_TYPE_OF[weights]);
      // llama.cpp runs once per format and thread count; Tandem at each block size (int4: and
      // head bits) beside it.
      const llamaCppRows = new Map<number, LlamaCppMeasurement>();
      const quantizations = (weights === "fp32" ? [DEFAULT_QUANT_BLOCK_SIZE] : blockSizes).flatMap(
        (quantBlockSize) =>
          headBitsToRun(weights, int4HeadBits).map((headBits) => ({
            quantBlockSize,
            int4HeadBits: headBits,
          })),
      );
      for (const { quantBlockSize: blockSize, int4HeadBits: headBits } of quantizations) {
        const formatRows: { tandem: CaseResult; llamaCpp: LlamaCppMeasurement }[] = [];
        for (const threads of threadCounts) {
          const shared = { threads, promptTokens, decodeTokens, rounds };
          const tandemCase: TandemCase = {
            engine: "tandem",
            modelDir,
            label,
            weights,
            blockSize,
            int4HeadBits: headBits,
            ...shared,
          };
          const result = (await runChild(tandemCase)) as CaseResult;
          let llamaCpp = llamaCppRows.get(threads);
          if (!llamaCpp) {
            llamaCpp = (await runChild({ engine: "llama.cpp", gguf, ...shared })) as LlamaCppMeasurement;
            llamaCppRows.set(threads, llamaCpp);
          }
          formatRows.push({ tandem: result, llamaCpp });
          // The limit: a decode step cannot go faster than reading its weights once from memory.
          const limitTokensPerS = (bandwidth.readGbPerS * 1e9) / result.weight_bytes_per_token;
          const row = {
            model: label,
            ...result,
            decode_bandwidth_fraction: result.decode_tokens_per_s / limitTokensPerS,
            reference_decode_tokens_per_s: reference,
            llama_cpp: { gguf_type: GGUF_TYPE_OF[weights], ...llamaCpp },
          };
          process.stderr.write(`runtime bench: ${JSON.stringify(row)}\n`);
          rows.push(row);
        }
        // As the issue states the anchor: each engine at its best thread count (on two cores,
        // llama.cpp's spinning workers can make its 2-thread decode slower than its 1-thread).
        const best = (pick: (r: { tandem: CaseResult; llamaCpp: LlamaCppMeasurement }) => number) =>
          Math.max(...formatRows.map(pick));
        const tandemDecode = best((r) => r.tandem.decode_tokens_per_s);
        const llamaCppDecode = best((r) => r.llamaCpp.decode_tokens_per_s);
        const tandemPrefill = best((r) => r.tandem.prefill_tokens_per_s);
        const llamaCppPrefill = best((r) => r.llamaCpp.prefill_tokens_per_s);
        anchor.push({
          model: label,
          weights,
          block_size: weights === "fp32" ? null : blockSize,
          int4_head_bits: weights === "int4" ? headBits : null,
          gguf_type: GGUF_TYPE_OF[weights],
          tandem_decode_tokens_per_s: tandemDecode,
          llama_cpp_decode_tokens_per_s: llamaCppDecode,
          decode_ratio: tandemDecode / llamaCppDecode,
          tandem_prefill_tokens_per_s: tandemPrefill,
          llama_cpp_prefill_tokens_per_s: llamaCppPrefill,
          prefill_ratio: tandemPrefill / llamaCppPrefill,
        });
      }
    }
  }
  const qualityPositions = options.smoke ? 32 : 512;
  process.stderr.write(`runtime bench: quality on the demo model, ${qualityPositions} positions\n`);
  const quality = await demoModelQuality(qualityPositions, formats, blockSizes, int4HeadBits);
  return {
    name: "runtime",
    memory_bandwidth_gb_s: bandwidth.readGbPerS,
    memory_bandwidth: bandwidth,
    rows,
    llama_cpp_anchor: anchor,
    demo_model_quality: { positions: qualityPositions, rows: quality },
  };
}
