/** The chaos benchmark's figures per fault, from its runs (definitions in scoring.ts and batch-job-faults.ts). */
import { percentile } from "../statistics.ts";
import type { BatchRunOutcome } from "./batch-job-faults.ts";
import type { RunOutcome } from "./generation-faults.ts";

const sum = (values: number[]) => values.reduce((a, b) => a + b, 0);

export function summarizeGenerationFault(runs: RunOutcome[]) {
  const fallback = runs.map((r) => r.fallback_tokens);
  const recovery = runs.map((r) => r.recovery_ms);
  const empty = runs.length === 0;
  return {
    runs: runs.length,
    tokens_lost: sum(runs.map((r) => r.tokens_lost)),
    tokens_repeated: sum(runs.map((r) => r.tokens_repeated)),
    outputs_different: runs.filter((r) => r.different).length,
    fallback_tokens_p95: empty ? 0 : percentile(fallback, 0.95),
    recovery_ms_p50: empty ? 0 : percentile(recovery, 0.5),
    recovery_ms_p95: empty ? 0 : percentile(recovery, 0.95),
    recovery_ms_max: empty ? 0 : Math.max(...recovery),
    unrecovered_runs: runs.filter((r) => !r.recovered).length,
    longest_wait_ms_max: empty ? 0 : Math.max(...runs.map((r) => r.longest_wait_ms)),
    leader_changes: runs.filter((r) => r.leader_changed).length,
    placement_changes: sum(runs.map((r) => r.placement_changes)),
    maps_without_live_worker: sum(runs.map((r) => r.maps_without_live_worker)),
    fallback_tokens: sum(fallback),
    failed_generations: sum(runs.map((r) => r.failed_generations)),
    generations: sum(runs.map((r) => r.generations)),
    tokens: sum(runs.map((r) => r.tokens)),
    per_run: runs,
  };
}

export function summarizeBatchFault(runs: BatchRunOutcome[]) {
  return {
    runs: runs.length,
    jobs: sum(runs.map((r) => r.jobs)),
    /** Results that never arrived or arrived different. */
    jobs_lost: sum(runs.map((r) => r.jobs - r.correct)),
    jobs_different: sum(runs.map((r) => r.different)),
    jobs_failed: sum(runs.map((r) => r.failed)),
    jobs_missing: sum(runs.map((r) => r.missing)),
    per_run: runs,
  };
}
