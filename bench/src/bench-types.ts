/**
 * The contract every benchmark under bench/ follows: a module `bench/src/<name>.bench.ts`
 * whose default export runs the benchmark and returns the one JSON object that
 * `tandem bench <name>` prints as its last line. Progress goes to stderr.
 */
import type { z } from "zod";
import type { BENCH_OPTION_SCHEMAS, BenchName } from "./bench-options.ts";

export interface BenchOptions<N extends BenchName = BenchName> {
  /** A tiny run for CI: same code paths, smallest sizes, few iterations. */
  smoke: boolean;
  /** The benchmark's own options, validated (bench-options.ts). */
  options: z.output<(typeof BENCH_OPTION_SCHEMAS)[N]>;
}

export type BenchResult = Record<string, unknown>;

export type Benchmark<N extends BenchName = BenchName> = (options: BenchOptions<N>) => Promise<BenchResult>;
