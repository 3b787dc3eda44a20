/**
 * Benchmark `chaos`: greedy generations (fp32 codec, cloud-only unless `--mode auto`)
 * through a local cluster of real processes at the shipped default timings — two
 * control-plane replicas, two cloud workers, an edge agent following the placement map,
 * on the demo model — while, at a random token of a generation, one fault strikes:
 *
 *   worker_kill       SIGKILL of the worker serving that generation (then a replacement)
 *   leader_kill       SIGKILL of the control-plane replica holding the lease (then a new replica)
 *   nats_restart      the nats-server stopped and started on its port and store
 *   nats_server_kill  SIGKILL of one server of a three-server NATS cluster (a cluster per run)
 *   redis_restart     the Redis of the batch queues restarted while generation jobs run
 *
 * Generations go on back to back for `--observe-ms` after the fault, and every one is
 * compared with the uninterrupted run of its prompt. Per fault: runs, tokens_lost,
 * tokens_repeated, outputs_different (runs with any generation not token-for-token the
 * uninterrupted one), fallback_tokens_p95 (per run: tokens the edge answered itself when
 * the cloud was asked), recovery_ms_p50/p95 (fault → the first cloud token after which
 * the client is served from the cloud without a fallback, a failed generation or a wait
 * over 500 ms); and jobs_lost (batch jobs whose result never arrived or arrived
 * different). Exact definitions in chaos/scoring.ts and chaos/batch-job-faults.ts.
 *
 * Targets: lost, repeated and different all 0 (while another worker survives, the edge
 * waits within its deadline for the new owner), recovery p95 < 3 s, no job lost.
 * Usage: tandem bench chaos [--runs N] [--tokens N] [--observe-ms MS] [--seed S]
 *        [--mode cloud-only|auto] [--faults a,b] [--log-dir DIR] [--smoke]
 */
import { CLUSTER_DEFAULTS } from "@tandem/common";
import { DEFAULT_CONTROLLER_OPTIONS } from "@tandem/control-plane";
import { DEFAULT_CLOUD_LINK_OPTIONS } from "@tandem/edge-agent";
import type { BenchOptions, BenchResult } from "./bench-types.ts";
import { redisRestartRuns } from "./chaos/batch-job-faults.ts";
import { summarizeBatchFault, summarizeGenerationFault } from "./chaos/fault-summary.ts";
import {
  GENERATION_FAULTS,
  type GenerationFaultName,
  referenceOutputs,
  type RunOutcome,
  type RunSettings,
  runFault,
} from "./chaos/generation-faults.ts";
import type { GenerationMode } from "./chaos/generation-record.ts";
import { LocalCluster, SPLIT } from "./chaos/local-cluster.ts";
import type { Reference } from "./chaos/scoring.ts";
import { type Random, seededRandom } from "./seeded-random.ts";

/** Documentation-flavoured prompts, as the demo model writes. */
const PROMPTS = [
  "The Python standard library",
  "To open a file, use the",
  "A list comprehension is",
  "The following example shows how to",
  "Exceptions are raised when",
  "In this tutorial we",
];

/** A client waiting longer than this for its next event counts as disrupted (tokens come every ~5 ms). */
const STALL_MS = 500;
const BATCH_TIMEOUT_MS = 180_000;
const log = (line: string) => process.stderr.write(`chaos: ${line}\n`);
const ALL_FAULTS = [...GENERATION_FAULTS, "redis_restart"] as const;
type FaultName = (typeof ALL_FAULTS)[number];

let clusters = 0;
const clusterName = () => `chaos-${process.pid}-${Date.now()}-${++clusters}`;

/** N runs of one fault, on a cluster of its own (a new one per run for a NATS cluster, which loses a server). */
async function generationFaultRuns(
  name: GenerationFaultName,
  runs: number,
  settings: Omit<RunSettings, "references"> & { logDir?: string },
  references: (cluster: LocalCluster) => Promise<Map<string, Reference>>,
  random: Random,
): Promise<RunOutcome[]> {
  const natsServers = name === "nats_server_kill" ? 3 : 1;
  const outcomes: RunOutcome[] = [];
  let cluster: LocalCluster | undefined;
  try {
    for (let run = 0; run < runs; run++) {
      if (!cluster) {
        log(`${name}: starting a cluster (${natsServers} NATS server${natsServers > 1 ? "s" : ""})`);
        cluster = await LocalCluster.start({
          natsServers,
          mode: settings.mode,
          name: clusterName(),
          logDir: settings.logDir,
        });
      }
      const outcome = await runFault(
        name,
        cluster,
        { ...settings, references: await references(cluster) },
        random,
      );
      log(`${name} run ${run + 1}/${runs}: ${JSON.stringify(outcome)}`);
      outcomes.push(outcome);
      if (natsServers > 1) {
        await cluster.stop();
        cluster = undefined;
      }
    }
  } finally {
    await cluster?.stop();
  }
  return outcomes;
}

export default async function chaosBenchmark(options: BenchOptions<"chaos">): Promise<BenchResult> {
  const { smoke } = options;
  const runs = options.options.runs ?? (smoke ? 1 : 5);
  const tokens = options.options.tokens ?? (smoke ? 24 : 40);
  const observeMs = options.options.observeMs ?? (smoke ? 4000 : 10_000);
  const seed = options.options.seed ?? 1;
  const mode: GenerationMode = options.options.mode === "auto" ? "MODE_AUTO" : "MODE_CLOUD_ONLY";
  const faults: FaultName[] = options.options.faults ?? [...ALL_FAULTS];
  const random = seededRandom(seed);
  const prompts = smoke ? PROMPTS.slice(0, 2) : PROMPTS;
  const settings = { prompts, tokens, mode, observeMs, stallMs: STALL_MS, logDir: options.options.logDir };

  // The uninterrupted outputs, taken once on the first cluster (the same model and split everywhere).
  let references: Map<string, Reference> | undefined;
  const referencesOn = async (cluster: LocalCluster) => {
    references ??= await referenceOutputs(cluster, prompts, tokens, mode);
    return references;
  };

  const result: Record<string, unknown> = {};
  for (const name of faults) {
    if (name === "redis_restart") {
      const outcomes = await redisRestartRuns(
        { runs, jobsPerRun: smoke ? 2 : 4, prompts, tokens, timeoutMs: BATCH_TIMEOUT_MS, log },
        random,
      );
      result[name] = summarizeBatchFault(outcomes);
    } else {
      result[name] = summarizeGenerationFault(
        await generationFaultRuns(name, runs, settings, referencesOn, random),
      );
    }
  }
  const batch = result.redis_restart as ReturnType<typeof summarizeBatchFault> | undefined;
  return {
    name: "chaos",
    smoke,
    model: "tandem-demo",
    split: SPLIT,
    codec: "fp32",
    mode: mode === "MODE_AUTO" ? "auto" : "cloud-only",
    tokens,
    observe_ms: observeMs,
    stall_ms: STALL_MS,
    seed,
    timings: {
      worker_heartbeat_ms: CLUSTER_DEFAULTS.heartbeatMs,
      heartbeat_ttl_ms: DEFAULT_CONTROLLER_OPTIONS.heartbeatTtlMs,
      control_tick_ms: DEFAULT_CONTROLLER_OPTIONS.tickMs,
      lease_ttl_ms: DEFAULT_CONTROLLER_OPTIONS.leaseTtlMs,
      edge_cloud_deadline_ms: DEFAULT_CLOUD_LINK_OPTIONS.deadlineMs,
    },
    faults: result,
    jobs_lost: batch?.jobs_lost ?? 0,
  };
}
