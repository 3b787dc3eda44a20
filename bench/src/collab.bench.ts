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
 *   - cloud-worker decode throughput with 1, 4 and 16 concurrent sessions, batched vs not.
 * Usage: tandem bench collab [--smoke] [--only compute|throughput]
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createCanvas } from "@napi-rs/canvas";
import {
  AlwaysDeferPolicy,
  AlwaysExitPolicy,
  calibratedExitHeads,
  type Calibration,
  type Checkpoint,
  CODEC_NAMES,
  type CodecName,
  type ExitPolicy,
  getCodec,
  loadCheckpoint,
  loadLocalSplit,
  LocalUpperSegment,
  readCalibration,
  type SamplingOptions,
  SegmentModel,
  SegmentSessions,
  segmentSpec,
  SplitGenerator,
  ThresholdExitPolicy,
  Tokenizer,
  type UpperAnswer,
  type UpperSegment,
} from "@tandem/runtime";
import { ContextManager, DecodeBatcher } from "@tandem/cloud-worker";
import { freePort, generate, startProgram } from "@tandem/testkit";
import type { BenchOptions, BenchResult } from "./bench-types.ts";
import { startLinkEmulator, type LinkOptions } from "./link-emulator.ts";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const MODEL = join(ROOT, "models", "tandem-demo");
/** Shipped calibrations: the default split (edge runs 3 of 6 layers) and a deeper one (5 of 6). */
const CALIBRATIONS = [join(MODEL, "calibration.safetensors"), join(MODEL, "calibration-split5.safetensors")];
const HELDOUT = join(MODEL, "heldout.txt");
const PLOT = join(ROOT, "bench", "results", "collab.png");
const LINK: LinkOptions = { oneWayDelayMs: 20, rateMbit: 50 };

interface Context {
  checkpoint: Checkpoint;
  calibration: Calibration;
  calibrationPath: string;
  tokenizer: Tokenizer;
  split: number;
  windows: number[][];
  prompts: number[][];
  smoke: boolean;
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

const percentile = (values: number[], p: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
};

/** Teacher forced on held-out windows: exit decisions per policy, cloud answers per codec. */
async function agreementSweep(ctx: Context) {
  const { checkpoint, calibration, split } = ctx;
  const layers = checkpoint.config.numLayers;
  const hiddenSize = checkpoint.config.hiddenSize;
  const lower = new SegmentSessions(
    await SegmentModel.load(
      checkpoint,
      segmentSpec({
        fromLayer: 0,
        toLayer: split,
        exits: calibratedExitHeads(calibration),
        outputHidden: true,
        positions: "all",
      }),
    ),
  );
  const upper = new SegmentSessions(
    await SegmentModel.load(
      checkpoint,
      segmentSpec({ fromLayer: split, toLayer: layers, finalHead: true, positions: "all" }),
    ),
  );
  const policies = calibration.summary.policies;
  const perPolicy = policies.map(() => ({ local: 0, agree: 0 }));
  const codecAgree: Record<CodecName, number> = { fp32: 0, fp16: 0, int8: 0, int4: 0 };
  let positions = 0;
  for (const window of ctx.windows) {
    lower.open("w");
    const step = await lower.forward("w", { ids: window });
    lower.release("w");
    const tokensBy: Partial<Record<CodecName, number[]>> = {};
    for (const codec of CODEC_NAMES) {
      const c = getCodec(codec);
      const hidden = c.decode(c.encode(step.hidden!, window.length, hiddenSize), window.length, hiddenSize);
      upper.open("w");
      tokensBy[codec] = (await upper.forward("w", { hidden, count: window.length })).exits[0].token;
      upper.release("w");
    }
    const full = tokensBy.fp32!;
    for (const codec of CODEC_NAMES)
      codecAgree[codec] += tokensBy[codec]!.filter((t, i) => t === full[i]).length;
    for (let p = 0; p < window.length; p++) {
      const signals = step.exits.map((e) => ({
        afterLayer: e.afterLayer,
        token: e.token[p],
        prob: e.prob[p],
        margin: e.margin[p],
        entropy: e.entropy[p],
      }));
      policies.forEach((policy, i) => {
        const exit = new ThresholdExitPolicy(policy.thresholds).decide(signals).exit;
        const token = exit ? exit.token : full[p];
        if (exit) perPolicy[i].local++;
        if (token === full[p]) perPolicy[i].agree++;
      });
    }
    positions += window.length;
  }
  await lower.model.release();
  await upper.model.release();
  return {
    positions,
    codecAgreement: Object.fromEntries(CODEC_NAMES.map((c) => [c, codecAgree[c] / positions])) as Record<
      CodecName,
      number
    >,
    policies: policies.map((p, i) => ({
      target: p.targetAgreement,
      metric: p.metric,
      escalated_share: 1 - perPolicy[i].local / positions,
      agreement: perPolicy[i].agree / positions,
    })),
  };
}

interface CloudCall {
  start: number;
  hidden: Float32Array;
  count: number;
  wantToken: boolean;
  sampling: SamplingOptions;
}

/** Records the cloud's calls during free generation, to replay them as a cloud machine would run them. */
class RecordingUpper implements UpperSegment {
  readonly calls: CloudCall[] = [];
  constructor(private readonly inner: UpperSegment) {}
  extend(
    start: number,
    hidden: Float32Array,
    count: number,
    wantToken: boolean,
    sampling: SamplingOptions,
  ): Promise<UpperAnswer | undefined> {
    this.calls.push({ start, hidden: hidden.slice(), count, wantToken, sampling });
    return this.inner.extend(start, hidden, count, wantToken, sampling);
  }
  close() {
    return this.inner.close();
  }
}

/** Runs recorded cloud calls back to back on a fresh session; returns their wall time. */
async function replay(upper: SegmentSessions, calls: CloudCall[], sessionId: string): Promise<number> {
  const segment = new LocalUpperSegment(upper, sessionId);
  const start = performance.now();
  for (const c of calls) await segment.extend(c.start, c.hidden, c.count, c.wantToken, c.sampling);
  const ms = performance.now() - start;
  await segment.close();
  return ms;
}

async function cloudCompute(ctx: Context, maxTokens: number) {
  const { checkpoint, calibration, split } = ctx;
  const layers = checkpoint.config.numLayers;
  // The whole model (cloud-only), and the split as edge and cloud run it.
  const whole = await loadLocalSplit(checkpoint);
  const edgeAndCloud = await loadLocalSplit(checkpoint, { split, exits: calibratedExitHeads(calibration) });
  const lower = edgeAndCloud.lower;
  const upper = edgeAndCloud.upper!;
  // Warm the whole model's path once (recording below warms the split).
  for await (const _ of new SplitGenerator(whole.lower, undefined, new AlwaysExitPolicy()).generate(
    ctx.prompts[0],
    { maxTokens: 4 },
  ))
    void _;

  // What the cloud runs for each policy is recorded during free generation (the edge's
  // layers run in this process too, and would evict the cloud's weights from the caches a
  // cloud machine keeps to itself), then replayed back to back. Timed figures drift on a
  // shared machine, so the cloud-only baseline and the replays run interleaved, prompt by
  // prompt, in several rounds; each figure is the median over rounds of its ratio to the
  // baseline of the same round.
  const policies: { policy: string; target: number; make: () => ExitPolicy }[] = [
    ...ctx.calibration.summary.policies.map((p) => ({
      policy: `calibrated ${p.targetAgreement}`,
      target: p.targetAgreement,
      make: () => new ThresholdExitPolicy(p.thresholds),
    })),
    {
      policy: "cloud-only through the edge (every token escalated)",
      target: 1,
      make: () => new AlwaysDeferPolicy(),
    },
  ];
  const recorded: { calls: CloudCall[]; tokens: number; escalations: number; positionsSent: number }[][] = [];
  for (const [i, prompt] of ctx.prompts.entries()) {
    const perPolicy = [];
    for (const [j, policy] of policies.entries()) {
      const recording = new RecordingUpper(new LocalUpperSegment(upper, `r${i}.${j}`));
      const collaborative = new SplitGenerator(lower, recording, policy.make());
      let tokens = 0;
      for await (const _ of collaborative.generate(prompt, { maxTokens })) tokens++;
      await recording.close();
      perPolicy.push({
        calls: recording.calls,
        tokens,
        escalations: collaborative.stats.escalations,
        positionsSent: collaborative.stats.positionsSent,
      });
    }
    recorded.push(perPolicy);
  }
  const rounds = ctx.smoke ? 1 : 3;
  const perRound = Array.from({ length: rounds }, () => ({
    wholeMs: 0,
    wholeTokens: 0,
    policies: policies.map(() => ({ ms: 0, tokens: 0, escalations: 0, positionsSent: 0 })),
  }));
  for (let round = 0; round < rounds; round++) {
    process.stderr.write(`collab bench: split ${split}: cloud compute, round ${round + 1} of ${rounds}\n`);
    const totals = perRound[round];
    for (const [i, prompt] of ctx.prompts.entries()) {
      // Cloud-only: the cloud runs every layer for every token.
      const generator = new SplitGenerator(whole.lower, undefined, new AlwaysExitPolicy());
      for await (const _ of generator.generate(prompt, { maxTokens })) totals.wholeTokens++;
      totals.wholeMs += generator.stats.lowerMs;
      for (const [j, run] of recorded[i].entries()) {
        const t = totals.policies[j];
        t.ms += await replay(upper, run.calls, `p${round}.${i}.${j}`);
        t.tokens += run.tokens;
        t.escalations += run.escalations;
        t.positionsSent += run.positionsSent;
      }
    }
  }
  const promptTokens = ctx.prompts.reduce((a, p) => a + p.length, 0);
  // Multiply-adds ×2 per position of a layer (projections and MLP; attention scores are
  // small at these lengths) and of the LM head, from the model's shape.
  const c = checkpoint.config;
  const mlpWidth = c.intermediateSize * (c.numExpertsPerToken ?? 1);
  const layerFlops =
    2 * c.hiddenSize * (2 * c.numHeads * c.headDim + 2 * c.numKvHeads * c.headDim) +
    2 * 3 * c.hiddenSize * mlpWidth;
  const headFlops = 2 * c.hiddenSize * c.vocabSize;
  const rows = policies.map((policy, j) => {
    const last = perRound[rounds - 1].policies[j];
    const wholeTokens = perRound[rounds - 1].wholeTokens;
    return {
      policy: policy.policy,
      target: policy.target,
      cloud_ms_per_token: median(perRound.map((r) => r.policies[j].ms / r.policies[j].tokens)),
      cloud_compute_relative: median(
        perRound.map((r) => r.policies[j].ms / r.policies[j].tokens / (r.wholeMs / r.wholeTokens)),
      ),
      cloud_compute_relative_per_round: perRound.map(
        (r) => r.policies[j].ms / r.policies[j].tokens / (r.wholeMs / r.wholeTokens),
      ),
      escalated_share: last.escalations / last.tokens,
      // The same by arithmetic: FLOPs of the cloud's calls over those of the whole model
      // prefilling each prompt and decoding every token (blind to caches and batching).
      cloud_flops_relative:
        recorded
          .map((perPolicy) =>
            perPolicy[j].calls.reduce(
              (sum, call) =>
                sum + call.count * (layers - split) * layerFlops + (call.wantToken ? headFlops : 0),
              0,
            ),
          )
          .reduce((a, b) => a + b, 0) /
        ((promptTokens + wholeTokens) * layers * layerFlops + wholeTokens * headFlops),
    };
  });
  await whole.release();
  await edgeAndCloud.release();
  return {
    cloud_only_ms_per_token: median(perRound.map((r) => r.wholeMs / r.wholeTokens)),
    rounds,
    rows,
  };
}

/** Real processes: worker behind the emulated link, one edge agent per codec. */
async function latencyAndBytes(ctx: Context, maxTokens: number, everyCodec: boolean) {
  const env = { TANDEM_LOG_LEVEL: "error" };
  const workerPort = await freePort();
  const worker = await startProgram(
    "tandem-cloud-worker",
    { model: MODEL, split: ctx.split, port: workerPort, workerId: "bench" },
    env,
  );
  const link = await startLinkEmulator({ host: "127.0.0.1", port: workerPort }, LINK);
  const text = (prompt: number[]) => ctx.tokenizer.decode(prompt);
  const latency: Record<string, { p50: number; p95: number; first_token_ms: number }> = {};
  const bytes: Record<
    string,
    { per_generated_token: number; per_escalated_token: number; escalated_share: number }
  > = {};
  try {
    for (const codec of everyCodec && !ctx.smoke ? CODEC_NAMES : (["fp16"] as CodecName[])) {
      const edge = await startProgram(
        "tandem-edge",
        {
          model: MODEL,
          calibration: ctx.calibrationPath,
          target: 0.99,
          cloudAddress: link.address,
          codec,
          port: 0,
          cloudDeadlineMs: 5000,
        },
        env,
      );
      try {
        const modes =
          codec === "fp16"
            ? (["MODE_EDGE_ONLY", "MODE_AUTO", "MODE_CLOUD_ONLY"] as const)
            : (["MODE_AUTO"] as const);
        for (const mode of modes) {
          const gaps: number[] = [];
          const firsts: number[] = [];
          let sent = 0;
          let generated = 0;
          let escalations = 0;
          for (const prompt of ctx.prompts) {
            const start = performance.now();
            let last = start;
            const result = await generate(edge.address, { text: text(prompt), maxTokens, mode }, (index) => {
              const now = performance.now();
              if (index === 0) firsts.push(now - start);
              else gaps.push(now - last);
              last = now;
            });
            if (result.error) throw new Error(`generate failed: ${result.error.details}`);
            sent += Number(result.summary!.bytesSent);
            generated += result.tokens.length;
            escalations += result.summary!.escalations;
          }
          const name =
            mode === "MODE_EDGE_ONLY" ? "edge_only" : mode === "MODE_AUTO" ? "collaborative" : "cloud_only";
          if (codec === "fp16")
            latency[name] = {
              p50: percentile(gaps, 0.5),
              p95: percentile(gaps, 0.95),
              first_token_ms: percentile(firsts, 0.5),
            };
          if (mode === "MODE_AUTO")
            bytes[codec] = {
              per_generated_token: sent / generated,
              per_escalated_token: sent / Math.max(1, escalations),
              escalated_share: escalations / generated,
            };
        }
      } finally {
        await edge.kill();
      }
    }
  } finally {
    await link.close();
    await worker.kill();
  }
  return { latency, bytes };
}

/** Decode throughput of the worker's context manager with concurrent sessions. */
async function workerThroughput(ctx: Context, stepsPerSession: number) {
  const { checkpoint, split } = ctx;
  const layers = checkpoint.config.numLayers;
  const hiddenSize = checkpoint.config.hiddenSize;
  const model = await SegmentModel.load(
    checkpoint,
    segmentSpec({ fromLayer: split, toLayer: layers, finalHead: true, logits: true }),
  );
  const lower = new SegmentSessions(
    await SegmentModel.load(checkpoint, segmentSpec({ fromLayer: 0, toLayer: split, outputHidden: true })),
  );
  lower.open("h");
  const hidden = (await lower.forward("h", { ids: ctx.windows[0].slice(0, 64) })).hidden!;
  await lower.model.release();
  const rows = [];
  for (const sessions of [1, 4, 16]) {
    // Rounds alternate which mode goes first; each figure is the median over rounds (a
    // single pass favoured whichever ran second by up to 20% here).
    const rates: Record<"batched" | "unbatched", number[]> = { batched: [], unbatched: [] };
    for (let round = 0; round < (ctx.smoke ? 1 : 3); round++)
      for (const batching of round % 2 === 0 ? [false, true] : [true, false]) {
        const segmentSessions = new SegmentSessions(model);
        const batcher = new DecodeBatcher(segmentSessions, { enabled: batching, maxBatch: 16 });
        const contexts = new ContextManager(segmentSessions, batcher);
        for (let s = 0; s < sessions; s++)
          await contexts.append(`s${s}`, 0, hidden.subarray(0, 32 * hiddenSize), 32);
        const start = performance.now();
        await Promise.all(
          Array.from({ length: sessions }, async (_, s) => {
            for (let i = 0; i < stepsPerSession; i++) {
              const p = 32 + i;
              await contexts.append(
                `s${s}`,
                p,
                hidden.subarray((p % 64) * hiddenSize, ((p % 64) + 1) * hiddenSize),
                1,
              );
            }
          }),
        );
        rates[batching ? "batched" : "unbatched"].push(
          (sessions * stepsPerSession) / ((performance.now() - start) / 1000),
        );
        for (let s = 0; s < sessions; s++) contexts.release(`s${s}`);
      }
    rows.push({
      sessions,
      unbatched_tokens_per_s: median(rates.unbatched),
      batched_tokens_per_s: median(rates.batched),
      speedup: median(rates.batched) / median(rates.unbatched),
    });
  }
  await model.release();
  return rows;
}

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

export default async function collabBenchmark(options: BenchOptions): Promise<BenchResult> {
  // `--only throughput|compute` runs just that part (quick iteration).
  const only = options.args.includes("--only") ? options.args[options.args.indexOf("--only") + 1] : undefined;
  const checkpoint = await loadCheckpoint(MODEL);
  const calibration = await readCalibration(CALIBRATIONS[0]);
  const tokenizer = await Tokenizer.fromFile(checkpoint.tokenizerPath!);
  const ids = tokenizer.encode(readFileSync(HELDOUT, "utf8"));
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
    calibrationPath: CALIBRATIONS[0],
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
      worker_throughput: await workerThroughput(base, options.smoke ? 4 : 128),
    };
  }

  const splits = [];
  for (const path of options.smoke ? CALIBRATIONS.slice(0, 1) : CALIBRATIONS)
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
  const wire = latencies[best.ctx.split];
  const codecs = latencies[splits[0].ctx.split];
  process.stderr.write("collab bench: worker throughput\n");
  const throughput = await workerThroughput(base, options.smoke ? 4 : 128);

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
    batched_speedup_16_sessions: throughput.find((r) => r.sessions === 16)?.speedup,
    by_split: splits.map((s) => ({
      split: s.ctx.split,
      calibration: s.ctx.calibrationPath.slice(ROOT.length + 1),
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
    plot: options.smoke ? undefined : "bench/results/collab.png",
  };
  if (!options.smoke)
    plot(
      best.sweep.policies,
      best.compute.rows,
      wire.latency,
      `edge runs ${best.ctx.split} of ${checkpoint.config.numLayers} layers`,
      PLOT,
    );
  return result;
}

function plot(
  sweep: { target: number; escalated_share: number; agreement: number }[],
  compute: { target: number; cloud_compute_relative: number }[],
  latency: Record<string, { p50: number; p95: number }>,
  deployment: string,
  path: string,
): void {
  const canvas = createCanvas(1100, 460);
  const g = canvas.getContext("2d");
  g.fillStyle = "white";
  g.fillRect(0, 0, 1100, 460);
  g.font = "14px sans-serif";
  // Panel 1: escalation share and cloud compute vs agreement target.
  const left = 70;
  const top = 50;
  const w = 420;
  const h = 330;
  g.strokeStyle = "#888";
  g.strokeRect(left, top, w, h);
  g.fillStyle = "#222";
  g.fillText(`${deployment}; per calibrated agreement target:`, left - 40, top - 30);
  g.fillText(
    "escalated share (blue), cloud compute ÷ cloud-only (red), agreement (green)",
    left - 40,
    top - 12,
  );
  const x = (i: number) => left + ((i + 0.5) / sweep.length) * w;
  const y = (v: number) => top + (1 - v) * h;
  const series: [string, number[]][] = [
    ["#1f77b4", sweep.map((s) => s.escalated_share)],
    ["#d62728", sweep.map((s) => compute.find((c) => c.target === s.target)?.cloud_compute_relative ?? 0)],
    ["#2ca02c", sweep.map((s) => s.agreement)],
  ];
  for (const [color, values] of series) {
    g.strokeStyle = color;
    g.fillStyle = color;
    g.lineWidth = 2;
    g.beginPath();
    values.forEach((v, i) => (i === 0 ? g.moveTo(x(i), y(v)) : g.lineTo(x(i), y(v))));
    g.stroke();
    values.forEach((v, i) => g.fillRect(x(i) - 3, y(v) - 3, 6, 6));
  }
  g.fillStyle = "#222";
  sweep.forEach((s, i) => g.fillText(String(s.target), x(i) - 14, top + h + 18));
  for (let t = 0; t <= 4; t++) g.fillText((t / 4).toFixed(2), left - 40, y(t / 4) + 4);
  g.fillText("agreement target", left + w / 2 - 50, top + h + 38);
  // Panel 2: per-token latency over the emulated link.
  const left2 = 620;
  const entries = Object.entries(latency);
  const max = Math.max(...entries.map(([, v]) => v.p95), 1);
  g.strokeStyle = "#888";
  g.strokeRect(left2, top, 420, h);
  g.fillText(
    `per-token latency, ms (${LINK.oneWayDelayMs} ms each way, ${LINK.rateMbit} Mbit/s)`,
    left2,
    top - 20,
  );
  entries.forEach(([name, v], i) => {
    const bx = left2 + 30 + i * 130;
    g.fillStyle = "#1f77b4";
    g.fillRect(bx, top + h - (v.p50 / max) * (h - 20), 45, (v.p50 / max) * (h - 20));
    g.fillStyle = "#ff7f0e";
    g.fillRect(bx + 50, top + h - (v.p95 / max) * (h - 20), 45, (v.p95 / max) * (h - 20));
    g.fillStyle = "#222";
    g.fillText(name, bx, top + h + 18);
    g.fillText(`${v.p50.toFixed(1)} / ${v.p95.toFixed(1)}`, bx, top + h + 36);
  });
  g.fillText("p50 (blue) / p95 (orange)", left2 + 130, top + h + 56);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, canvas.toBuffer("image/png"));
}
