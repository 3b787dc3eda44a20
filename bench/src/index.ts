/**
 * @tandem/bench: every benchmark by name. Each loads on demand, so naming one does not
 * load the others' dependencies.
 */
import type { Benchmark } from "./bench-types.ts";

export type { BenchOptions, BenchResult, Benchmark } from "./bench-types.ts";

export const BENCHMARKS: Record<string, () => Promise<Benchmark>> = {
  codec: async () => (await import("./codec.bench.ts")).default,
  collab: async () => (await import("./collab.bench.ts")).default,
  exits: async () => (await import("./exits.bench.ts")).default,
  placement: async () => (await import("./placement.bench.ts")).default,
  runtime: async () => (await import("./runtime.bench.ts")).default,
};
