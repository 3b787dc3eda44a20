/**
 * Each benchmark's own command-line options (`tandem bench codec --dims 256,2048`), as
 * zod schemas: the CLI validates them (an unknown flag or a bad value is refused, naming
 * it) before the benchmark loads. Kept apart from the benchmarks so naming one does not
 * load any.
 */
import { z } from "zod";
import { INT4_HEAD_BITS, WEIGHT_FORMATS } from "@tandem/runtime";

/** Benchmarks that run each case in a child process pass it the case this way. */
const CASE_OPTION = z
  .string()
  .min(1)
  .optional()
  .meta({ description: "internal: run one case (JSON) in this process" });

export const BENCH_OPTION_SCHEMAS = {
  api: z
    .object({
      epochs: z
        .int()
        .min(1)
        .optional()
        .meta({ description: "times every deployment is started afresh (default 3; --smoke 1)" }),
      rounds: z
        .int()
        .min(1)
        .optional()
        .meta({ description: "measurement rounds per epoch (default 5; --smoke 1)" }),
    })
    .strict(),
  codec: z
    .object({
      dims: z
        .array(z.int().min(1))
        .min(1)
        .optional()
        .meta({ description: "hidden sizes (default 256,768,2048)" }),
      tokens: z.int().min(1).optional().meta({ description: "tokens per call (default 64)" }),
    })
    .strict(),
  collab: z
    .object({
      only: z.enum(["compute", "throughput", "verified", "codec-bits"]).optional().meta({
        description: "run only this part (codec-bits: agreement by bits per value, only run alone)",
      }),
    })
    .strict(),
  exits: z.object({}).strict(),
  fuzz: z
    .object({
      cases: z.int().min(1).optional().meta({ description: "calls to make (default 20000; --smoke 200)" }),
      seed: z.int().optional().meta({ description: "fast-check seed (default 1)" }),
    })
    .strict(),
  placement: z.object({}).strict(),
  startup: z
    .object({
      runs: z.int().min(1).optional().meta({ description: "timed starts per program and mode (default 5)" }),
      beforeCheckout: z.string().min(1).optional().meta({
        description:
          "time `before` from another checkout's bins, run as they are (e.g. a git worktree of an older commit, installed and built), instead of this checkout's sources through tsx",
      }),
    })
    .strict(),
  runtime: z
    .object({
      models: z.array(z.string().min(1)).min(1).optional().meta({
        description:
          "models to run (default 1M,25M,110M: generated Llama checkpoints of those sizes; also any of real-model-configs.ts, e.g. Llama-3.2-1B)",
      }),
      formats: z
        .array(z.enum(WEIGHT_FORMATS))
        .min(1)
        .optional()
        .meta({ description: "weight formats to run (default fp32,int8,w8a8,int4)" }),
      blockSizes: z.array(z.int().min(16).max(256)).min(1).optional().meta({
        description:
          "Tandem's quantization block sizes to run int8/int4 at (w8a8: its LM head), each beside llama.cpp's Q8_0/Q4_0 (default 32, Q4_0's own)",
      }),
      int4HeadBits: z.array(z.literal(INT4_HEAD_BITS)).min(1).optional().meta({
        description:
          "bits of int4's LM head to run at (default 8, what a segment with the model's final head keeps, as Q4_0 files do; 4 is the edge's exits' head)",
      }),
      case: CASE_OPTION,
    })
    .strict(),
  moe: z
    .object({
      tokens: z
        .int()
        .min(2)
        .optional()
        .meta({ description: "decoded tokens per run (default 32; --smoke 4)" }),
      runs: z
        .int()
        .min(1)
        .optional()
        .meta({ description: "timed runs per model and execution, alternating (default 5)" }),
      threads: z.int().min(1).optional().meta({ description: "ONNX Runtime threads (default 2)" }),
      only: z.enum(["sparse", "edge-cache", "distributed"]).optional().meta({
        description:
          "run only this part: sparse vs all-experts, the edge's expert cache, or experts across three workers",
      }),
    })
    .strict(),
  scale: z
    .object({
      models: z.array(z.string().min(1)).min(1).optional().meta({
        description:
          "models to run (default Llama-3.2-1B,Qwen2.5-0.5B,tandem-demo; any of real-model-configs.ts, or tandem-demo: the trained demo model)",
      }),
      case: CASE_OPTION,
    })
    .strict(),
  chaos: z
    .object({
      runs: z.int().min(1).optional().meta({ description: "runs of each fault (default 5; --smoke 1)" }),
      tokens: z
        .int()
        .min(4)
        .max(1024)
        .optional()
        .meta({ description: "tokens per generation (default 40; --smoke 24)" }),
      observeMs: z.int().min(100).optional().meta({
        description:
          "generations go on back to back this long after each fault (default 10000; --smoke 4000)",
      }),
      seed: z.int().optional().meta({ description: "seed of the fault points and targets (default 1)" }),
      mode: z
        .enum(["cloud-only", "auto"])
        .optional()
        .meta({ description: "generation mode: cloud-only (default), or auto with the demo's calibration" }),
      faults: z
        .array(z.enum(["worker_kill", "leader_kill", "nats_restart", "nats_server_kill", "redis_restart"]))
        .min(1)
        .optional()
        .meta({ description: "faults to run, comma-separated (default: all)" }),
      logDir: z
        .string()
        .min(1)
        .optional()
        .meta({ description: "write each program's log (level info) to this directory when it stops" }),
    })
    .strict(),
} as const;

export type BenchName = keyof typeof BENCH_OPTION_SCHEMAS;

export function isBenchName(name: string): name is BenchName {
  return Object.hasOwn(BENCH_OPTION_SCHEMAS, name);
}
