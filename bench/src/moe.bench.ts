/**
 * `tandem bench moe`: what running MoE experts sparsely buys. For the Mixtral-style demo
 * model and a larger random Mixtral shape (hidden 1024, 8 experts of intermediate 3584,
 * top 2, 8 layers), the whole model decodes greedily from a short prompt twice: with each
 * expert run only on the tokens routed to it (`sparse`, ONNX Runtime's MoE kernel, the
 * default for fp32 weights) and with every expert run on every token (`all-experts`, the
 * standard-operator path quantized experts take, and what every MoE segment ran before).
 *
 * Reported per model and execution: decode tokens/s (median of the runs) and the MLP FLOPs
 * executed per token as a fraction of all experts' — from the routing actually performed
 * (the graph's expert choices, counted by the engine): each chosen expert runs its SwiGLU
 * on that token once in the sparse path, every expert does in the other. Both paths give
 * the same tokens (checked). `sparse_speedup_vs_all_experts` is the larger shape's.
 *
 * `edge_cache`: the same models host-routed (experts outside the graphs) with an expert
 * cache of 25%, 50% and 100% of all experts' bytes: decode tokens/s and hit rate once warm.
 * `distributed` (moe/distributed-experts.ts): experts across three workers on the demo
 * MoE — logits against a single process, expert-call bytes per token, live expert load,
 * and a host lost mid-generation.
 * Usage: tandem bench moe [--smoke] [--only sparse|edge-cache|distributed]
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import {
  DEFAULT_HOT_SHARE,
  ExpertCache,
  expertFormatsByActivation,
  HostRoutedMoeModel,
  loadCheckpoint,
  SegmentModel,
  SegmentSessions,
  segmentSpec,
  type Checkpoint,
  type MoeExecution,
  type WeightFormat,
} from "@tandem/runtime";
import { writeRandomCheckpoint, type RandomCheckpointSpec } from "@tandem/runtime/testing";
import type { Benchmark } from "./bench-types.ts";
import { BENCH_MODELS_DIR, DEMO_MOE_MODEL } from "./bench-paths.ts";
import { median } from "./statistics.ts";
import { distributedExperts } from "./moe/distributed-experts.ts";

/** The demo MoE's recommended split (its tandem.json): the workers run layers [3, 6). */
const DEMO_MOE_SPLIT = 3;

/** The larger shape: hidden 1024, 8 experts × 3584, top 2, 8 layers. */
const LARGE_MOE: RandomCheckpointSpec = {
  architecture: "mixtral",
  vocabSize: 8192,
  hiddenSize: 1024,
  intermediateSize: 3584,
  numLayers: 8,
  numHeads: 16,
  numKvHeads: 8,
  numExperts: 8,
  numExpertsPerToken: 2,
  tieWordEmbeddings: false,
  maxPositions: 512,
  dtype: "BF16",
  seed: 5,
};

/** The same structure at a size a smoke run builds in a second. */
const SMOKE_MOE: RandomCheckpointSpec = {
  ...LARGE_MOE,
  vocabSize: 512,
  hiddenSize: 64,
  intermediateSize: 160,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
};

const PROMPT = [3, 17, 99, 5, 42, 7, 11, 250, 31, 64, 2, 8, 150, 77, 21, 9];

interface Row {
  model: string;
  execution: MoeExecution;
  hidden: number;
  experts: number;
  k: number;
  layers: number;
  decode_tok_s: number;
  mlp_flops_fraction: number;
}

/** Decodes `tokens` greedily after the prompt; tokens/s of the decode, the tokens, and the expert runs counted. */
async function decode(
  sessions: SegmentSessions,
  tokens: number,
  beforeTimed: () => void = () => undefined,
  prompt: number[] = PROMPT,
): Promise<{ tokPerS: number; produced: number[]; expertRuns: number; expertCounts: number[] }> {
  sessions.open("bench");
  let step = await sessions.forward("bench", { ids: prompt });
  const produced: number[] = [];
  sessions.model.takeExpertCounts();
  beforeTimed();
  const started = performance.now();
  for (let i = 0; i < tokens; i++) {
    const next = step.exits[0].token[step.exits[0].token.length - 1];
    produced.push(next);
    step = await sessions.forward("bench", { ids: [next] });
  }
  const seconds = (performance.now() - started) / 1000;
  const expertCounts = sessions.model.takeExpertCounts()!;
  const expertRuns = expertCounts.reduce((a, b) => a + b, 0);
  sessions.release("bench");
  return { tokPerS: tokens / seconds, produced, expertRuns, expertCounts };
}

interface Loaded {
  execution: MoeExecution;
  sessions: SegmentSessions;
  rates: number[];
  produced: number[];
  expertRuns: number;
}

/**
 * Both executions of one model, loaded side by side and timed in alternating runs, so
 * that the machine's drift (its memory bandwidth moves between minutes) hits both alike.
 */
async function measure(
  label: string,
  checkpoint: Checkpoint,
  options: { tokens: number; runs: number; threads: number; cacheDir: string },
  log: (line: string) => void,
): Promise<(Row & { produced: number[] })[]> {
  const { config } = checkpoint;
  const loaded: Loaded[] = [];
  for (const execution of ["sparse", "all-experts"] as const) {
    const model = await SegmentModel.load(
      checkpoint,
      segmentSpec({ fromLayer: 0, toLayer: config.numLayers, finalHead: true, moeExecution: execution }),
      { cacheDir: options.cacheDir, threads: options.threads },
    );
    const sessions = new SegmentSessions(model);
    await decode(sessions, 2); // warm-up: first runs allocate and pack
    loaded.push({ execution, sessions, rates: [], produced: [], expertRuns: 0 });
  }
  for (let run = 0; run < options.runs; run++)
    for (const l of run % 2 === 0 ? loaded : [...loaded].reverse()) {
      const result = await decode(l.sessions, options.tokens);
      l.rates.push(result.tokPerS);
      l.produced = result.produced;
      l.expertRuns = result.expertRuns;
    }
  const experts = config.numExperts!;
  const k = config.numExpertsPerToken!;
  const rows = [];
  for (const l of loaded) {
    await l.sessions.model.release();
    // Expert runs per token and layer: the routing performed (k each) in the sparse path;
    // every expert in the other, whatever was chosen.
    const routedPerTokenLayer = l.expertRuns / (options.tokens * config.numLayers);
    const mlpFlopsFraction = l.execution === "sparse" ? routedPerTokenLayer / experts : 1;
    const row: Row = {
      model: label,
      execution: l.execution,
      hidden: config.hiddenSize,
      experts,
      k,
      layers: config.numLayers,
      decode_tok_s: Math.round(median(l.rates) * 10) / 10,
      mlp_flops_fraction: Math.round(mlpFlopsFraction * 1000) / 1000,
    };
    log(
      `moe: ${label} ${l.execution}: ${row.decode_tok_s} tok/s, MLP FLOPs ${row.mlp_flops_fraction} of all experts'`,
    );
    rows.push({ ...row, produced: l.produced });
  }
  return rows;
}

/** Budgets of the edge's expert cache, as fractions of all experts' bytes. */
const EDGE_BUDGETS = [0.25, 0.5, 1] as const;
/** The edge's expertThreads measured: 0 (loads in the decoding thread) and the default, 2. */
const EDGE_EXPERT_THREADS = [0, 2] as const;

/** Text the per-expert formats' activation counts are taken on: not the measured prompt. */
const PROFILE_PROMPT = [12, 400, 88, 6, 1000, 23, 57, 3, 710, 45, 19, 260, 91, 4, 333, 70];

/** The experts' formats in an edge cache: all the segment's, or some chosen per expert. */
interface ExpertFormats {
  name: string;
  formatOf?: (layer: number, expert: number) => WeightFormat;
}

interface EdgeCacheRow {
  model: string;
  /** "fp32", or e.g. "fp32 hot + int4 cold" (by activation frequency). */
  formats: string;
  budget_fraction: number;
  /** Threads holding the experts (0: the decoding thread; else parallel loads and prefetch). */
  expert_threads: number;
  budget_mb: number;
  all_experts_mb: number;
  /** Expert runs whose expert was loaded already, over the timed decodes. */
  hit_rate: number;
  /** Experts loaded (from disk) per decoded token, at need; prefetched ones not counted. */
  loads_per_token: number;
  /** Experts loaded ahead of need per decoded token (expert threads). */
  prefetches_per_token: number;
  /** Share of the prefetched experts that were then run: the predictor's precision. */
  prefetch_precision: number | null;
  tokens_per_s: number;
  /** Share of the decoded tokens equal to the all-fp32 cache's (per-expert formats only). */
  agreement_with_fp32?: number;
}

/**
 * The whole model host-routed (experts outside the graphs, EdgeMoE-style) with an expert
 * cache of each budget: decode tokens/s and hit rate once warm (a warm-up decode, then the
 * timed ones). Every budget must decode the very tokens the unbudgeted cache does, and
 * those the in-graph sparse path decoded (`expected`).
 */
async function edgeCache(
  label: string,
  checkpoint: Checkpoint,
  expected: number[] | undefined,
  options: { tokens: number; runs: number; threads: number; cacheDir: string },
  log: (line: string) => void,
  formats: ExpertFormats = { name: "fp32" },
  /** What the budgets are fractions of (default: these experts' bytes), and the fp32 cache's tokens. */
  fp32?: { allBytes: number; produced: number[] },
): Promise<{ rows: EdgeCacheRow[]; allBytes: number; produced: number[] }> {
  const spec = segmentSpec({
    fromLayer: 0,
    toLayer: checkpoint.config.numLayers,
    finalHead: true,
    moeExecution: "host",
  });
  const load = (budgetBytes: number, expertThreads: number) =>
    HostRoutedMoeModel.load(checkpoint, spec, {
      cacheDir: options.cacheDir,
      threads: options.threads,
      experts: { budgetBytes, formatOf: formats.formatOf, expertThreads },
    });
  // The experts' bytes in their formats: the cache alone, which builds graphs but loads none.
  const layers = Array.from({ length: checkpoint.config.numLayers }, (_, layer) => layer);
  const probe = await ExpertCache.open(checkpoint, layers, spec.weightFormat, undefined, {
    cacheDir: options.cacheDir,
    formatOf: formats.formatOf,
  });
  const ownBytes = probe.stats().allExpertBytes;
  const allBytes = fp32?.allBytes ?? ownBytes;
  const rows: EdgeCacheRow[] = [];
  let reference: number[] | undefined;
  for (const fraction of EDGE_BUDGETS)
    for (const expertThreads of EDGE_EXPERT_THREADS) {
      // A budget that holds every expert starts no thread: the same path as 0.
      if (fraction === 1 && expertThreads > 0) continue;
      const model = await load(Math.ceil(allBytes * fraction), expertThreads);
      const sessions = new SegmentSessions(model);
      await decode(sessions, options.tokens); // warm-up: the cache fills
      const rates: number[] = [];
      let hits = 0;
      let misses = 0;
      let prefetches = 0;
      let prefetchHits = 0;
      for (let run = 0; run < options.runs; run++) {
        let before = model.experts.stats();
        const result = await decode(sessions, options.tokens, () => (before = model.experts.stats()));
        const after = model.experts.stats();
        hits += after.hits - before.hits;
        misses += after.misses - before.misses;
        prefetches += after.prefetches - before.prefetches;
        prefetchHits += after.prefetchHits - before.prefetchHits;
        rates.push(result.tokPerS);
        reference ??= result.produced;
        if (result.produced.join() !== reference.join())
          throw new Error(`${label}: the expert cache at ${fraction} of the experts decoded other tokens`);
      }
      await model.release();
      const produced = reference!;
      const row: EdgeCacheRow = {
        model: label,
        formats: formats.name,
        budget_fraction: fraction,
        expert_threads: expertThreads,
        budget_mb: Math.round((allBytes * fraction) / 2 ** 20),
        all_experts_mb: Math.round(ownBytes / 2 ** 20),
        hit_rate: Math.round((hits / (hits + misses)) * 1000) / 1000,
        loads_per_token: Math.round((misses / (options.runs * options.tokens)) * 100) / 100,
        prefetches_per_token: Math.round((prefetches / (options.runs * options.tokens)) * 100) / 100,
        prefetch_precision: prefetches > 0 ? Math.round((prefetchHits / prefetches) * 1000) / 1000 : null,
        tokens_per_s: Math.round(median(rates) * 10) / 10,
        ...(fp32 && {
          agreement_with_fp32:
            Math.round((produced.filter((t, i) => t === fp32.produced[i]).length / produced.length) * 1000) /
            1000,
        }),
      };
      log(
        `moe: ${label} edge cache (${formats.name}) at ${fraction}, ${expertThreads} expert threads: ${row.tokens_per_s} tok/s, hit rate ${row.hit_rate}, ${row.loads_per_token} loads/token, ${row.prefetches_per_token} prefetches/token (precision ${row.prefetch_precision})`,
      );
      rows.push(row);
    }
  if (expected && reference && expected.join() !== reference.join())
    throw new Error(`${label}: host-routed experts decoded other tokens than the in-graph sparse block`);
  return { rows, allBytes, produced: reference! };
}

/**
 * The demo model's cache with per-expert formats as an edge with `expertColdWeights` int4
 * runs it: the experts carrying 80% of each layer's activations (counted on other text)
 * in fp32, the rest in int4, under the same budgets in MB as the all-fp32 cache.
 */
async function edgeCacheByActivation(
  label: string,
  checkpoint: Checkpoint,
  options: { tokens: number; runs: number; threads: number; cacheDir: string },
  log: (line: string) => void,
  fp32: { allBytes: number; produced: number[] },
): Promise<EdgeCacheRow[]> {
  const profile = await HostRoutedMoeModel.load(
    checkpoint,
    segmentSpec({
      fromLayer: 0,
      toLayer: checkpoint.config.numLayers,
      finalHead: true,
      moeExecution: "host",
    }),
    { cacheDir: options.cacheDir, threads: options.threads },
  );
  // The routing of a decode on other text than the measured prompt.
  const { expertCounts: activations } = await decode(
    new SegmentSessions(profile),
    options.tokens,
    undefined,
    PROFILE_PROMPT,
  );
  await profile.release();
  const formatOf = expertFormatsByActivation(
    activations,
    {
      numLayers: checkpoint.config.numLayers,
      numExperts: checkpoint.config.numExperts!,
    },
    {
      hot: "fp32",
      cold: "int4",
      hotShare: DEFAULT_HOT_SHARE,
    },
  );
  const name = `fp32 hot + int4 cold, hot share ${DEFAULT_HOT_SHARE}`;
  return (await edgeCache(label, checkpoint, undefined, options, log, { name, formatOf }, fp32)).rows;
}

const moe: Benchmark<"moe"> = async ({ smoke, options }) => {
  const log = (line: string) => process.stderr.write(line + "\n");
  const tokens = options.tokens ?? (smoke ? 4 : 32);
  const runs = options.runs ?? (smoke ? 1 : 5);
  const threads = options.threads ?? 2;
  const shape = smoke ? SMOKE_MOE : LARGE_MOE;
  const label = smoke ? "random-mixtral-smoke" : "random-mixtral-1024x8x3584";
  const dir = join(BENCH_MODELS_DIR, label);
  if (!existsSync(join(dir, "config.json"))) {
    log(`moe: writing the random checkpoint ${label} (once; kept in ${BENCH_MODELS_DIR})`);
    await writeRandomCheckpoint(dir, shape);
  }
  const cacheDir = join(BENCH_MODELS_DIR, "graphs");
  const models: [string, Checkpoint][] = [
    ["tandem-demo-moe", await loadCheckpoint(DEMO_MOE_MODEL)],
    [label, await loadCheckpoint(dir)],
  ];
  const rows: Row[] = [];
  const speedups: Record<string, number> = {};
  const edgeRows: EdgeCacheRow[] = [];
  for (const [name, checkpoint] of options.only === "distributed" ? [] : models) {
    let produced: number[] | undefined;
    if (options.only !== "edge-cache") {
      const [sparse, all] = await measure(name, checkpoint, { tokens, runs, threads, cacheDir }, log);
      if (sparse.produced.join() !== all.produced.join())
        throw new Error(`${name}: sparse and all-experts execution decoded different tokens`);
      for (const { produced: _, ...row } of [sparse, all]) rows.push(row);
      speedups[name] = Math.round((sparse.decode_tok_s / all.decode_tok_s) * 100) / 100;
      produced = sparse.produced;
    }
    if (options.only === undefined || options.only === "edge-cache") {
      // The large shape's misses each read and pack a 42 MB expert: fewer runs.
      const edgeRuns = name === "tandem-demo-moe" ? runs : Math.min(runs, 2);
      const edgeOptions = { tokens, runs: edgeRuns, threads, cacheDir };
      const fp32 = await edgeCache(name, checkpoint, produced, edgeOptions, log);
      edgeRows.push(...fp32.rows);
      // Per-expert formats pay where routing is skewed: the trained demo router (a random
      // router spreads tokens evenly, so most experts stay hot).
      if (name === "tandem-demo-moe")
        edgeRows.push(...(await edgeCacheByActivation(name, checkpoint, edgeOptions, log, fp32)));
    }
  }
  // Experts across three workers, on the demo MoE at its recommended split.
  const distributed =
    options.only === undefined || options.only === "distributed"
      ? await distributedExperts(DEMO_MOE_MODEL, models[0][1], DEMO_MOE_SPLIT, smoke ? 4 : tokens, log)
      : undefined;
  const largeSparse = rows.find((r) => r.model === label && r.execution === "sparse");
  return {
    name: "moe",
    threads,
    prompt_tokens: PROMPT.length,
    decode_tokens: tokens,
    runs,
    rows,
    demo_sparse_speedup: speedups["tandem-demo-moe"],
    sparse_speedup_vs_all_experts: speedups[label],
    mlp_flops_vs_all_experts: largeSparse?.mlp_flops_fraction,
    edge_cache: edgeRows,
    distributed,
    ...(distributed && {
      distributed_max_abs_logit_diff: distributed.distributed_max_abs_logit_diff,
      expert_bytes_per_token: distributed.expert_bytes_per_token,
      live_expert_load_max_mean: distributed.live_expert_load_max_mean,
      host_loss_outputs_identical: distributed.host_loss_outputs_identical,
    }),
  };
};

export default moe;
