/**
 * @tandem/bench: every benchmark by name, with its options. Each loads on demand, so
 * naming one does not load the others' dependencies.
 */
import type { BenchName } from "./bench-options.ts";
import type { Benchmark } from "./bench-types.ts";

export { BENCH_OPTION_SCHEMAS, isBenchName, type BenchName } from "./bench-options.ts";
export type { BenchOptions, BenchResult, Benchmark } from "./bench-types.ts";

export const BENCHMARKS: { [N in BenchName]: { summary: string; load(): Promise<Benchmark<N>> } } = {
  codec: {
    summary: "hidden-state codecs: bytes, error, speed",
    load: async () => (await import("./codec.bench.ts")).default,
  },
  collab: {
    summary: "collaborative generation on the demo model: agreement, cloud compute, latency, throughput",
    load: async () => (await import("./collab.bench.ts")).default,
  },
  exits: {
    summary: "early exits of the demo model: share answered at the edge per agreement target",
    load: async () => (await import("./exits.bench.ts")).default,
  },
  fuzz: {
    summary: "mutated Escalate streams and Generate requests against a running edge and worker",
    load: async () => (await import("./fuzz.bench.ts")).default,
  },
  placement: {
    summary: "expert and shard placement: balance, moves, planning time, failover timing",
    load: async () => (await import("./placement.bench.ts")).default,
  },
  startup: {
    summary: "time to ready: edge agent and cloud worker to SERVING, tandem --help to exit; compiled vs tsx",
    load: async () => (await import("./startup.bench.ts")).default,
  },
  runtime: {
    summary: "the engine on generated Llama checkpoints: prefill, decode, memory bandwidth",
    load: async () => (await import("./runtime.bench.ts")).default,
  },
  moe: {
    summary:
      "MoE decode: experts run sparsely (only where routed) vs all on every token; MLP FLOPs per token",
    load: async () => (await import("./moe.bench.ts")).default,
  },
  scale: {
    summary:
      "real models' shapes in one BF16 file: load cold/warm, RSS vs target, speed, int8/int4 agreement",
    load: async () => (await import("./scale.bench.ts")).default,
  },
  chaos: {
    summary: "faults injected during generations and batch jobs on a local cluster at the shipped timings",
    load: async () => (await import("./chaos.bench.ts")).default,
  },
  api: {
    summary: "OpenAI-compatible HTTP vs gRPC latency, and tokens/s with metrics and tracing on vs off",
    load: async () => (await import("./api.bench.ts")).default,
  },
};
