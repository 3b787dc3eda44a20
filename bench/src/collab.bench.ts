/**
 * Benchmark `collab`: collaborative generation on the demo model.
 *   - policy sweep (calibrated thresholds per agreement target, plus edge-only and
 *     cloud-only): share of tokens escalated, agreement with the full model (teacher
 *     forced on held-out text), and cloud compute per generated token relative to a
 *     cloud-only deployment (the cloud calls of free generation, replayed back to back and
 *     timed against the whole model decoding the same prompts), for each shipped split;
 *   - per codec: agreement of cloud answers from decoded hidden states, bytes on the wire
 *     per generated and per escalated token (from the agent's own accounting);
 *   - per-token latency p50/p95 for edge-only, collaborative and cloud-only, with real
 *     edge-agent and cloud-worker processes over an emulated link;
 *   - cloud-worker decode throughput (continuous batching) with 1, 16 and 64 concurrent
 *     sessions and with sessions joining and leaving, on the 110M bench checkpoint.
 *   - verified decoding (verify EXACT and ROLLBACK) per split: agreement with cloud-only,
 *     latency over the emulated link, cloud compute, edge tokens accepted per round trip.
 * Usage: tandem bench collab [--smoke] [--only compute|throughput|verified]
 *
 * This module composes the parts (one measurement per module under collab/) into one run
 * and builds the JSON it prints.
 */
import { readFileSync } from "node:fs";
import { loadCheckpoint, readCalibration, Tokenizer } from "@tandem/runtime";
import { codecBits } from "./collab/codec-bits.ts";
import type { BenchOptions, BenchResult } from "./bench-types.ts";
import { agreementSweep } from "./collab/agreement.ts";
import { cloudCompute } from "./collab/cloud-compute.ts";
import { DEMO_HELDOUT_TEXT, DEMO_MODEL, REPO_ROOT } from "./bench-paths.ts";
import { type Context, demoCalibrations, LINK, PLOT } from "./collab/collab-context.ts";
import { plotCollab } from "./collab/collab-plot.ts";
import { latencyAndBytes } from "./collab/latency.ts";
import { verifiedDecoding } from "./collab/verified.ts";
import { workerThroughput } from "./collab/worker-throughput.ts";

/** Agreement sweep and cloud compute for one calibration (one split). */
async function measureSplit(base: Context, calibrationPath: string, maxTokens: number) {
  const calibration = await readCalibration(calibrationPath);
  const ctx: Context = { ...base, calibration, calibrationPath, split: calibration.summary.split };
  process.stderr.write(`collab bench: split ${ctx.split}: agreement sweep\n`);
  const sweep = await agreementSweep(ctx);
  process.stderr.write(`collab bench: split ${ctx.split}: cloud compute\n`);
  const compute = await cloudCompute(ctx, maxTokens);
  // The operating point: the cheapest calibrated policy whose agreement, measured here on
  // text calibration never saw, is at least 99%.
  const atTarget = compute.rows
    .filter((r) => r.target < 1)
    .map((r) => ({ ...r, agreement: sweep.policies.find((p) => p.target === r.target)!.agreement }))
    .filter((r) => r.agreement >= 0.99)
    .sort((x, y) => x.cloud_compute_relative - y.cloud_compute_relative)[0];
  return { ctx, sweep, compute, atTarget };
}

/** The JSON's exact_mode_by_split and rollback_by_split. */
function verifiedFigures(bySplit: Record<string, Awaited<ReturnType<typeof verifiedDecoding>>>) {
  const pick = (mode: "exact" | "rollback") =>
    Object.fromEntries(Object.entries(bySplit).map(([split, v]) => [split, v[mode]]));
  return {
    verified_draft_policy_target: Object.values(bySplit)[0]?.draft_policy_target,
    cloud_only_latency_by_split: Object.fromEntries(
      Object.entries(bySplit).map(([s, v]) => [s, v.cloud_only]),
    ),
    exact_mode_by_split: pick("exact"),
    rollback_by_split: pick("rollback"),
    by_draft_limit_by_split: Object.fromEntries(
      Object.entries(bySplit).map(([split, v]) => [split, v.by_draft_limit]),
    ),
  };
}

export default async function collabBenchmark(options: BenchOptions<"collab">): Promise<BenchResult> {
  // `--only throughput|compute` runs just that part (quick iteration).
  const only = options.options.only;
  const checkpoint = await loadCheckpoint(DEMO_MODEL);
  const calibrations = demoCalibrations();
  const calibration = await readCalibration(calibrations[0]);
  const tokenizer = await Tokenizer.forCheckpoint(checkpoint);
  const ids = tokenizer.encode(readFileSync(DEMO_HELDOUT_TEXT, "utf8"));
  const windowTokens = 128;
  const windowCount = options.smoke ? 4 : 64;
  // The end of the held-out text: calibration used its beginning.
  const tail = ids.slice(Math.max(0, ids.length - windowCount * windowTokens));
  const windows = Array.from({ length: Math.floor(tail.length / windowTokens) }, (_, w) =>
    tail.slice(w * windowTokens, (w + 1) * windowTokens),
  );
  const prompts = windows.slice(0, options.smoke ? 2 : 12).map((w) => w.slice(0, 32));
  const base: Context = {
    checkpoint,
    calibration,
    calibrationPath: calibrations[0],
    tokenizer,
    split: calibration.summary.split,
    windows,
    prompts,
    smoke: options.smoke,
  };
  const maxTokens = options.smoke ? 8 : 64;
  if (only === "throughput") {
    return {
      name: "collab",
      part: "throughput",
      worker_throughput: await workerThroughput(base),
    };
  }

  if (only === "verified") {
    const bySplit: Record<string, Awaited<ReturnType<typeof verifiedDecoding>>> = {};
    for (const path of options.smoke ? calibrations.slice(0, 1) : calibrations) {
      const calibration = await readCalibration(path);
      const split = calibration.summary.split;
      bySplit[split] = await verifiedDecoding(
        { ...base, calibration, calibrationPath: path, split },
        maxTokens,
      );
    }
    return { name: "collab", part: "verified", ...verifiedFigures(bySplit) };
  }

  if (only === "codec-bits") {
    const bySplit = [];
    for (const path of options.smoke ? calibrations.slice(0, 1) : calibrations) {
      const calibration = await readCalibration(path);
      bySplit.push(
        await codecBits({ ...base, calibration, calibrationPath: path, split: calibration.summary.split }),
      );
    }
    return { name: "collab", part: "codec-bits", by_split: bySplit };
  }

  const splits = [];
  for (const path of options.smoke ? calibrations.slice(0, 1) : calibrations)
    splits.push(await measureSplit(base, path, maxTokens));
  if (only === "compute") {
    return {
      name: "collab",
      part: "compute",
      by_split: splits.map((s) => ({
        split: s.ctx.split,
        at_target: s.atTarget,
        sweep: s.sweep.policies,
        cloud_compute: s.compute,
      })),
    };
  }
  // Headline: the split that saves the most cloud compute at ≥ 99% agreement.
  const best =
    [...splits]
      .filter((s) => s.atTarget)
      .sort((x, y) => x.atTarget!.cloud_compute_relative - y.atTarget!.cloud_compute_relative)[0] ??
    splits[0];
  const latencies: Record<number, Awaited<ReturnType<typeof latencyAndBytes>>> = {};
  for (const s of splits) {
    process.stderr.write(`collab bench: split ${s.ctx.split}: latency and bytes over the emulated link\n`);
    latencies[s.ctx.split] = await latencyAndBytes(s.ctx, maxTokens, s === splits[0] || options.smoke);
  }
  const verified: Record<string, Awaited<ReturnType<typeof verifiedDecoding>>> = {};
  for (const s of splits) verified[s.ctx.split] = await verifiedDecoding(s.ctx, maxTokens);
  const wire = latencies[best.ctx.split];
  const codecs = latencies[splits[0].ctx.split];
  process.stderr.write("collab bench: worker throughput\n");
  const throughput = await workerThroughput(base);

  const result = {
    name: "collab",
    model: "models/tandem-demo",
    link: {
      kind: "userspace TCP proxy on loopback (kernel has no netem)",
      one_way_delay_ms: LINK.oneWayDelayMs,
      rate_mbit: LINK.rateMbit,
    },
    positions_evaluated: best.sweep.positions,
    split: best.ctx.split,
    edge_layers: `${best.ctx.split} of ${checkpoint.config.numLayers}`,
    cloud_compute_saved_at_99pct_agreement: best.atTarget
      ? 1 - best.atTarget.cloud_compute_relative
      : undefined,
    // The same operating point counted in FLOPs rather than timed.
    cloud_flops_saved_at_99pct_agreement: best.atTarget ? 1 - best.atTarget.cloud_flops_relative : undefined,
    operating_point: best.atTarget && {
      calibrated_target: best.atTarget.target,
      agreement: best.atTarget.agreement,
      escalated_share_in_generation: best.atTarget.escalated_share,
    },
    p50_token_latency_ms: Object.fromEntries(Object.entries(wire.latency).map(([k, v]) => [k, v.p50])),
    p95_token_latency_ms: Object.fromEntries(Object.entries(wire.latency).map(([k, v]) => [k, v.p95])),
    first_token_latency_ms: Object.fromEntries(
      Object.entries(wire.latency).map(([k, v]) => [k, v.first_token_ms]),
    ),
    // Codecs are compared at the default split.
    bytes_per_escalated_token: Object.fromEntries(
      Object.entries(codecs.bytes).map(([k, v]) => [k, v.per_escalated_token]),
    ),
    bytes_per_generated_token: Object.fromEntries(
      Object.entries(codecs.bytes).map(([k, v]) => [k, v.per_generated_token]),
    ),
    agreement: splits[0].sweep.codecAgreement,
    ...verifiedFigures(verified),
    batched_speedup_16_sessions: throughput.batched_speedup_16_sessions,
    batched_speedup_64_sessions: throughput.batched_speedup_64_sessions,
    churn_vs_steady: throughput.churn_vs_steady,
    by_split: splits.map((s) => ({
      split: s.ctx.split,
      calibration: s.ctx.calibrationPath.slice(REPO_ROOT.length + 1),
      cloud_compute_saved_at_99pct_agreement: s.atTarget ? 1 - s.atTarget.cloud_compute_relative : undefined,
      cloud_flops_saved_at_99pct_agreement: s.atTarget ? 1 - s.atTarget.cloud_flops_relative : undefined,
      operating_point: s.atTarget && {
        calibrated_target: s.atTarget.target,
        agreement: s.atTarget.agreement,
      },
      p50_token_latency_ms: Object.fromEntries(
        Object.entries(latencies[s.ctx.split].latency).map(([k, v]) => [k, v.p50]),
      ),
      sweep: s.sweep.policies,
      cloud_compute: s.compute,
    })),
    worker_throughput: throughput,
  };
  const plotted =
    !options.smoke &&
    (await plotCollab(
      best.sweep.policies,
      best.compute.rows,
      wire.latency,
      `edge runs ${best.ctx.split} of ${checkpoint.config.numLayers} layers`,
      PLOT,
    ));
  return { ...result, plot: plotted ? "bench/results/collab.png" : undefined };
}
