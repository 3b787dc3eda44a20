/**
 * Each benchmark's own command-line options (`tandem bench codec --dims 256,2048`), as
 * zod schemas: the CLI validates them (an unknown flag or a bad value is refused, naming
 * it) before the benchmark loads. Kept apart from the benchmarks so naming one does not
 * load any.
 */
import { z } from "zod";

export const BENCH_OPTION_SCHEMAS = {
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
      only: z.enum(["compute", "throughput"]).optional().meta({ description: "run only this part" }),
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
      case: z
        .string()
        .min(1)
        .optional()
        .meta({ description: "internal: run one case (JSON) in this process" }),
    })
    .strict(),
} as const;

export type BenchName = keyof typeof BENCH_OPTION_SCHEMAS;

export function isBenchName(name: string): name is BenchName {
  return Object.hasOwn(BENCH_OPTION_SCHEMAS, name);
}
