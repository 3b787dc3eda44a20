/**
 * Benchmark `scale`: real models' shapes as users deploy them — one BF16 safetensors file
 * with the model's own config.json (random weights) — loaded the way the edge agent and the
 * cloud worker load them. Per model, for an edge segment [0, L/2) in int4, a worker
 * segment [L/2, L) in int8, and the whole model in each format:
 *   - load time with the graph cache empty (the graph is built) and filled (cold/warm);
 *   - resident memory after load and a short generation, against the target
 *     1.2 × the segment's weight bytes (its graph's initializers) + its KV + 150 MB, and
 *     the peak while building;
 *   - prefill and decode tokens/s (whole model: 1 and 2 threads);
 *   - greedy agreement of int8/int4 with fp32, teacher-forced over 256 positions.
 *
 * Each measurement runs in a child process so its RSS is its own, in the deployed
 * environment (huge pages for malloc, case-process.ts).
 * The trained demo model (`tandem-demo`) is the yardstick for agreement, measured on its
 * held-out text: random weights' next-token distributions are too flat for it to mean much.
 * Usage: tandem bench scale [--models Llama-3.2-1B,Qwen2.5-0.5B,tandem-demo] [--smoke]
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { totalmem } from "node:os";
import { join } from "node:path";
import {
  cloudSegmentSpec,
  edgeSegmentSpec,
  KV_BLOCK_POSITIONS,
  loadCheckpoint,
  RSS_ALLOWANCE_BYTES,
  RSS_WEIGHT_FACTOR,
  SegmentModel,
  SegmentSessions,
  segmentGraphPath,
  segmentSpec,
  type SegmentSpec,
  Tokenizer,
  type WeightFormat,
} from "@tandem/runtime";
import {
  REAL_MODEL_CONFIGS,
  sizedLlamaSpec,
  writeRandomCheckpoint,
  type RealModelName,
} from "@tandem/runtime/testing";
import { UsageError } from "@tandem/common";
import type { BenchOptions, BenchResult } from "./bench-types.ts";
import { BENCH_MODELS_DIR, DEMO_HELDOUT_TEXT, DEMO_MODEL, REPO_ROOT } from "./bench-paths.ts";
import { caseTooBigReason } from "./case-memory.ts";
import { runCaseProcess } from "./case-process.ts";
import { ensureRealShapeCheckpoint, isRealModelName } from "./real-shape-checkpoints.ts";
import { tokenAgreement } from "./statistics.ts";

const GRAPHS_DIR = join(REPO_ROOT, ".cache", "scale-graphs");
const DEFAULT_MODELS: string[] = ["Llama-3.2-1B", "Qwen2.5-0.5B", "tandem-demo"];

type SegmentKind = "edge" | "worker" | "whole";

interface Case {
  modelDir: string;
  cacheDir: string;
  segment: SegmentKind;
  weights: WeightFormat;
  threads: number;
  promptTokens: number;
  decodeTokens: number;
  /** Teacher-forced greedy tokens over this many positions (whole model only); 0: none. */
  agreementPositions: number;
  /** The text the agreement is measured on, as ids; else a fixed sequence of the vocabulary. */
  agreementIds?: number[];
}

interface CaseResult {
  load_ms: number;
  /** Built this load (the cache had no graph for it). */
  built: boolean;
  rss_mb: number;
  peak_rss_mb: number;
  graph_bytes: number;
  kv_bytes: number;
  prefill_tokens_per_s: number;
  decode_tokens_per_s: number;
  agreement_tokens?: number[];
}

function specFor(kind: SegmentKind, numLayers: number, weights: WeightFormat): SegmentSpec {
  const split = Math.floor(numLayers / 2);
  if (kind === "edge")
    // The edge agent's segment: exits half-way and at the split, hidden states out.
    return edgeSegmentSpec(
      split,
      [...new Set([Math.max(1, Math.floor(split / 2)), split])].map((afterLayer) => ({ afterLayer })),
      weights,
    );
  if (kind === "worker") return cloudSegmentSpec(split, numLayers, weights);
  return segmentSpec({ fromLayer: 0, toLayer: numLayers, finalHead: true, weightFormat: weights });
}

/** A fixed token sequence of the model's vocabulary. */
function tokens(length: number, vocab: number, salt = 0): number[] {
  return Array.from({ length }, (_, i) => (i * 7919 + 13 + salt * 104729) % vocab);
}

/**
 * This process's peak RSS: VmHWM, which starts afresh at exec (getrusage's maxrss does
 * not: it would report the parent's RSS at fork, e.g. after writing a checkpoint).
 */
function peakRssMb(): number {
  const line = readFileSync("/proc/self/status", "utf8").match(/^VmHWM:\s+(\d+) kB/m);
  return line ? Number(line[1]) / 1024 : process.resourceUsage().maxRSS / 1024;
}

function directoryBytes(dir: string): number {
  return readdirSync(dir).reduce((sum, file) => sum + statSync(join(dir, file)).size, 0);
}

async function runCase(c: Case): Promise<CaseResult> {
  const checkpoint = await loadCheckpoint(c.modelDir);
  const { config } = checkpoint;
  const spec = specFor(c.segment, config.numLayers, c.weights);
  const graphPath = segmentGraphPath(checkpoint, spec, c.cacheDir);
  const built = !existsSync(graphPath);
  const loadStart = performance.now();
  const model = await SegmentModel.load(checkpoint, spec, { cacheDir: c.cacheDir, threads: c.threads });
  checkpoint.releaseWeights?.();
  const loadMs = performance.now() - loadStart;
  const sessions = new SegmentSessions(model);

  // Segments after the first take hidden states: feed what an edge would send.
  const hiddenOf = (count: number) => {
    const hidden = new Float32Array(count * config.hiddenSize);
    for (let i = 0; i < hidden.length; i++) hidden[i] = Math.sin(i * 0.37) * 2;
    return { hidden, count };
  };
  const input = (ids: number[]) => (spec.fromLayer === 0 ? { ids } : hiddenOf(ids.length));

  sessions.open("bench");
  const prefillStart = performance.now();
  await sessions.forward("bench", input(tokens(c.promptTokens, config.vocabSize)));
  const prefillMs = performance.now() - prefillStart;
  const decodeStart = performance.now();
  for (let i = 0; i < c.decodeTokens; i++)
    await sessions.forward("bench", input([(i * 31) % config.vocabSize]));
  const decodeMs = performance.now() - decodeStart;
  const kvBytes = sessions.kvBytes("bench");
  const rssMb = process.memoryUsage().rss / 2 ** 20;
  sessions.release("bench");
  await model.release();

  let agreementTokens: number[] | undefined;
  if (c.agreementPositions > 0) {
    const teacher = await SegmentModel.load(checkpoint, segmentSpec({ ...spec, positions: "all" }), {
      cacheDir: c.cacheDir,
      threads: c.threads,
    });
    const forced = new SegmentSessions(teacher);
    forced.open("agreement");
    const step = await forced.forward("agreement", {
      ids:
        c.agreementIds?.slice(0, c.agreementPositions) ?? tokens(c.agreementPositions, config.vocabSize, 1),
    });
    agreementTokens = Array.from(step.exits[0].token);
    await teacher.release();
  }
  return {
    load_ms: loadMs,
    built,
    rss_mb: rssMb,
    peak_rss_mb: peakRssMb(),
    graph_bytes: directoryBytes(join(graphPath, "..")),
    kv_bytes: kvBytes,
    prefill_tokens_per_s: c.promptTokens / (prefillMs / 1000),
    decode_tokens_per_s: c.decodeTokens / (decodeMs / 1000),
    agreement_tokens: agreementTokens,
  };
}

/** Runs a case in a child process of its own (case-process.ts). */
async function runChild(c: Case): Promise<CaseResult> {
  return (await runCaseProcess("scale", c, 1 << 24)) as CaseResult;
}

/** The checkpoint of `name`, written once into .cache (minutes for a billion parameters). */
/**
 * The trained demo model as a yardstick for agreement: random weights give next-token
 * distributions so flat (over 128K+ tokens) that small quantization errors flip the argmax.
 */
const TRAINED = "tandem-demo";

async function ensureModel(name: string, smoke: boolean): Promise<string> {
  if (name === TRAINED) return DEMO_MODEL;
  const log = (line: string) => process.stderr.write(`scale bench: ${line}\n`);
  if (!smoke) return ensureRealShapeCheckpoint(name as RealModelName, log);
  const dir = join(BENCH_MODELS_DIR, "scale-smoke");
  if (!existsSync(join(dir, "config.json"))) {
    log("writing the smoke checkpoint (one BF16 file)");
    await writeRandomCheckpoint(dir, { ...sizedLlamaSpec(1e6), dtype: "BF16" as const });
  }
  return dir;
}

/** Megabytes with one decimal: the figures are read by people. */
const mb = (bytes: number) => Math.round((bytes / 2 ** 20) * 10) / 10;
const oneDecimal = (value: number) => Math.round(value * 10) / 10;

export default async function scaleBenchmark(options: BenchOptions<"scale">): Promise<BenchResult> {
  if (options.options.case)
    return (await runCase(JSON.parse(options.options.case) as Case)) as unknown as BenchResult;

  const smoke = options.smoke;
  const models = smoke ? ["smoke (1M llama)"] : (options.options.models ?? DEFAULT_MODELS);
  for (const [i, name] of models.entries())
    if (!smoke && !isRealModelName(name) && name !== TRAINED)
      throw new UsageError(
        `models[${i}]`,
        `no real shape "${name}"; known: ${Object.keys(REAL_MODEL_CONFIGS).join(", ")}`,
      );
  const promptTokens = smoke ? 16 : 128;
  const decodeTokens = smoke ? 4 : 32;
  const agreementPositions = smoke ? 16 : 256;
  const rows: Record<string, unknown>[] = [];
  const skipped: { model: string; segment: SegmentKind; weights: WeightFormat; reason: string }[] = [];
  for (const name of models) {
    const modelDir = await ensureModel(name, smoke);
    const checkpointBytes = directoryBytes(modelDir);
    const checkpoint = await loadCheckpoint(modelDir);
    const config = checkpoint.config;
    // Held-out text for the trained model; the random ones have no language to measure on.
    const agreementIds =
      name === TRAINED
        ? (await Tokenizer.forCheckpoint(checkpoint)).encode(
            readFileSync(DEMO_HELDOUT_TEXT, "utf8").slice(0, 20_000),
          )
        : undefined;
    const plan: { segment: SegmentKind; weights: WeightFormat; threads: number[] }[] = [
      { segment: "edge", weights: "int4", threads: [2] },
      { segment: "worker", weights: "int8", threads: [2] },
      { segment: "worker", weights: "w8a8", threads: [2] },
      ...(["fp32", "int8", "w8a8", "int4"] as const).map((weights) => ({
        segment: "whole" as const,
        weights,
        threads: smoke ? [1] : [1, 2],
      })),
    ];
    let fp32Tokens: number[] | undefined;
    for (const { segment, weights, threads } of plan) {
      // A case too big for this machine (a 7B model's fp32 whole: 30 GB) is named in
      // `skipped` rather than run into swap or the OOM killer.
      const reason = smoke
        ? undefined
        : caseTooBigReason(config, specFor(segment, config.numLayers, weights), totalmem());
      if (reason) {
        process.stderr.write(`scale bench: skipping ${name} ${segment} ${weights}: ${reason}\n`);
        skipped.push({ model: name, segment, weights, reason });
        continue;
      }
      // A graph cache of its own, empty: the first load builds, the next ones find it.
      const cacheDir = join(GRAPHS_DIR, `${name.replace(/[^\w.-]+/g, "_")}-${segment}-${weights}`);
      rmSync(cacheDir, { recursive: true, force: true });
      mkdirSync(cacheDir, { recursive: true });
      const base = {
        modelDir,
        cacheDir,
        segment,
        weights,
        promptTokens,
        decodeTokens,
        agreementPositions: 0,
        agreementIds: agreementIds?.slice(0, agreementPositions),
      };
      const cold = await runChild({ ...base, threads: threads[threads.length - 1] });
      for (const [i, t] of threads.entries()) {
        const warm = await runChild({
          ...base,
          threads: t,
          agreementPositions: segment === "whole" && i === 0 ? agreementPositions : 0,
        });
        if (warm.agreement_tokens && weights === "fp32") fp32Tokens = warm.agreement_tokens;
        const row = {
          model: name,
          segment:
            segment === "whole"
              ? `[0,${config.numLayers})`
              : segment === "edge"
                ? `edge [0,${Math.floor(config.numLayers / 2)})`
                : `worker [${Math.floor(config.numLayers / 2)},${config.numLayers})`,
          weights,
          threads: t,
          checkpoint_mb: mb(checkpointBytes),
          graph_weights_mb: mb(warm.graph_bytes),
          kv_mb: mb(warm.kv_bytes),
          rss_mb: oneDecimal(warm.rss_mb),
          rss_target_mb: oneDecimal(
            RSS_WEIGHT_FACTOR * mb(warm.graph_bytes) + mb(warm.kv_bytes) + mb(RSS_ALLOWANCE_BYTES),
          ),
          rss_after_cold_build_mb: oneDecimal(cold.rss_mb),
          peak_rss_cold_build_mb: oneDecimal(cold.peak_rss_mb),
          load_ms_cold: Math.round(cold.load_ms),
          load_ms_warm: Math.round(warm.load_ms),
          prefill_tokens_per_s: oneDecimal(warm.prefill_tokens_per_s),
          decode_tokens_per_s: oneDecimal(warm.decode_tokens_per_s),
          agreement_vs_fp32:
            weights !== "fp32" && warm.agreement_tokens && fp32Tokens
              ? Math.round(tokenAgreement(warm.agreement_tokens, fp32Tokens) * 1000) / 1000
              : null,
        };
        process.stderr.write(`scale bench: ${JSON.stringify(row)}\n`);
        rows.push(row);
      }
      rmSync(cacheDir, { recursive: true, force: true });
    }
  }
  return {
    name: "scale",
    prompt_tokens: promptTokens,
    decode_tokens: decodeTokens,
    agreement_positions: agreementPositions,
    kv_block_positions: KV_BLOCK_POSITIONS,
    rss_target: `${RSS_WEIGHT_FACTOR} × graph weight bytes + KV + ${mb(RSS_ALLOWANCE_BYTES)} MB`,
    rows,
    skipped,
  };
}
