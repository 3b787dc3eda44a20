/**
 * The contract every benchmark under bench/ follows: a module `bench/<name>.bench.ts`
 * whose default export runs the benchmark and returns the one JSON object that
 * `tandem bench <name>` prints as its last line. Progress goes to stderr.
 */
export interface BenchOptions {
  /** A tiny run for CI: same code paths, smallest sizes, few iterations. */
  smoke: boolean;
  /** Extra command-line arguments after the benchmark name. */
  args: string[];
}

export type BenchResult = Record<string, unknown>;

export type Benchmark = (options: BenchOptions) => Promise<BenchResult>;
