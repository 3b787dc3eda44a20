/**
 * Benchmark `collab`: collaborative generation on the demo model.
 *   - policy sweep (calibrated thresholds per agreement target, plus edge-only and
 *     cloud-only): share of tokens escalated, agreement with the full model (teacher
 *     forced on held-out text), and cloud compute per generated token relative to a
 *     cloud-only deployment (measured time of cloud forward calls in free generation);
 *   - per codec: agreement of cloud answers from decoded hidden states, bytes on the wire
 *     per generated and per escalated token (from the agent's own accounting);
 *   - per-token latency p50/p95 for edge-only, collaborative and cloud-only, with real
 *     edge-agent and cloud-worker processes over an emulated link;
 *   - cloud-worker decode throughput with 1, 4 and 16 concurrent sessions, batched vs not.
 * Usage: tandem bench collab [--smoke]
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createCanvas } from "@napi-rs/canvas";
import {
  readCalibration,
  calibratedExitHeads,
  type Calibration,
} from "../runtime/src/calibration/calibration-file.ts";
import { loadCheckpoint } from "../runtime/src/checkpoint/load-checkpoint.ts";
import type { Checkpoint } from "../runtime/src/checkpoint/model-weights.ts";
import { CODEC_NAMES, getCodec, type CodecName } from "../runtime/src/codec/hidden-state-codec.ts";
import { SegmentModel } from "../runtime/src/engine/segment-model.ts";
import { SegmentSessions } from "../runtime/src/engine/segment-sessions.ts";
import {
  AlwaysDeferPolicy,
  AlwaysExitPolicy,
  ThresholdExitPolicy,
  type ExitPolicy,
} from "../runtime/src/exits/exit-policy.ts";
import type { SamplingOptions } from "../runtime/src/generation/sampler.ts";
import {
  LocalUpperSegment,
  SplitGenerator,
  type UpperAnswer,
  type UpperSegment,
} from "../runtime/src/generation/split-generator.ts";
import { segmentSpec } from "../runtime/src/graph/segment-spec.ts";
import { Tokenizer } from "../runtime/src/tokenizer/tokenizer.ts";
import { ContextManager } from "../services/cloud-worker/src/context-manager.ts";
import { DecodeBatcher } from "../services/cloud-worker/src/decode-batcher.ts";
import { generate } from "../test/helpers/grpc-client.ts";
import { freePort, startProgram } from "../test/helpers/processes.ts";
import type { BenchOptions, BenchResult } from "./bench-types.ts";
import { startLinkEmulator, type LinkOptions } from "./link-emulator.ts";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const MODEL = join(ROOT, "models", "tandem-demo");
const CALIBRATION = join(MODEL, "calibration.safetensors");
const HELDOUT = join(MODEL, "heldout.txt");
const PLOT = join(ROOT, "bench", "results", "collab.png");
const LINK: LinkOptions = { oneWayDelayMs: 20, rateMbit: 50 };

interface Context {
  checkpoint: Checkpoint;
  calibration: Calibration;
  tokenizer: Tokenizer;
  split: number;
  windows: number[][];
  prompts: number[][];
  smoke: boolean;
}

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

/** Times the cloud's forward calls during free generation. */
class TimedUpper implements UpperSegment {
  ms = 0;
  constructor(private readonly inner: UpperSegment) {}
  async extend(
    start: number,
    hidden: Float32Array,
    count: number,
    wantToken: boolean,
    sampling: SamplingOptions,
  ): Promise<UpperAnswer | undefined> {
    const t = performance.now();
    try {
      return await this.inner.extend(start, hidden, count, wantToken, sampling);
    } finally {
      this.ms += performance.now() - t;
    }
  }
  close() {
    return this.inner.close();
  }
}

async function cloudCompute(ctx: Context, maxTokens: number) {
  const { checkpoint, calibration, split } = ctx;
  const layers = checkpoint.config.numLayers;
  const whole = new SegmentSessions(
    await SegmentModel.load(checkpoint, segmentSpec({ fromLayer: 0, toLayer: layers, finalHead: true })),
  );
  const lowerModel = await SegmentModel.load(
    checkpoint,
    segmentSpec({
      fromLayer: 0,
      toLayer: split,
      exits: calibratedExitHeads(calibration),
      outputHidden: true,
    }),
  );
  const upperModel = await SegmentModel.load(
    checkpoint,
    segmentSpec({ fromLayer: split, toLayer: layers, finalHead: true }),
  );
  const lower = new SegmentSessions(lowerModel);
  const upper = new SegmentSessions(upperModel);
  // Warm both paths once.
  for await (const _ of new SplitGenerator(whole, undefined, new AlwaysExitPolicy()).generate(
    ctx.prompts[0],
    { maxTokens: 4 },
  ))
    void _;

  // Cloud-only: the cloud runs every layer for every token.
  let wholeMs = 0;
  let wholeTokens = 0;
  for (const prompt of ctx.prompts) {
    const generator = new SplitGenerator(whole, undefined, new AlwaysExitPolicy());
    for await (const _ of generator.generate(prompt, { maxTokens })) wholeTokens++;
    wholeMs += generator.stats.lowerMs;
  }
  const run = async (policy: () => ExitPolicy) => {
    let ms = 0;
    let tokens = 0;
    let escalations = 0;
    let positionsSent = 0;
    for (const [i, prompt] of ctx.prompts.entries()) {
      const timed = new TimedUpper(new LocalUpperSegment(upper, `u${i}`));
      const generator = new SplitGenerator(lower, timed, policy());
      for await (const _ of generator.generate(prompt, { maxTokens })) tokens++;
      await timed.close();
      ms += timed.ms;
      escalations += generator.stats.escalations;
      positionsSent += generator.stats.positionsSent;
    }
    return {
      cloud_ms_per_token: ms / tokens,
      cloud_compute_relative: ms / tokens / (wholeMs / wholeTokens),
      escalated_share: escalations / tokens,
      // Layer-positions the cloud ran, relative to cloud-only (FLOPs view; ignores that chunks are cheaper per position).
      cloud_layer_positions_relative:
        (positionsSent * (layers - split)) /
        (wholeTokens * layers + ctx.prompts.reduce((a, p) => a + p.length, 0) * layers),
    };
  };
  const rows = [];
  for (const policy of ctx.calibration.summary.policies) {
    rows.push({
      policy: `calibrated ${policy.targetAgreement}`,
      target: policy.targetAgreement,
      ...(await run(() => new ThresholdExitPolicy(policy.thresholds))),
    });
  }
  rows.push({
    policy: "cloud-only through the edge (every token escalated)",
    target: 1,
    ...(await run(() => new AlwaysDeferPolicy())),
  });
  await whole.model.release();
  await lowerModel.release();
  await upperModel.release();
  return { cloud_only_ms_per_token: wholeMs / wholeTokens, rows };
}

/** Real processes: worker behind the emulated link, one edge agent per codec. */
async function latencyAndBytes(ctx: Context, maxTokens: number) {
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
    for (const codec of ctx.smoke ? (["fp16"] as CodecName[]) : CODEC_NAMES) {
      const edge = await startProgram(
        "tandem-edge",
        {
          model: MODEL,
          calibration: CALIBRATION,
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
    const result: Record<string, number> = { sessions };
    for (const batching of [false, true]) {
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
      result[batching ? "batched_tokens_per_s" : "unbatched_tokens_per_s"] =
        (sessions * stepsPerSession) / ((performance.now() - start) / 1000);
    }
    rows.push({
      sessions,
      unbatched_tokens_per_s: result.unbatched_tokens_per_s,
      batched_tokens_per_s: result.batched_tokens_per_s,
      speedup: result.batched_tokens_per_s / result.unbatched_tokens_per_s,
    });
  }
  await model.release();
  return rows;
}

export default async function collabBenchmark(options: BenchOptions): Promise<BenchResult> {
  // `--only throughput` runs just the worker-throughput part (quick iteration on batching).
  const only = options.args.includes("--only") ? options.args[options.args.indexOf("--only") + 1] : undefined;
  const checkpoint = await loadCheckpoint(MODEL);
  const calibration = await readCalibration(CALIBRATION);
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
  const ctx: Context = {
    checkpoint,
    calibration,
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
      worker_throughput: await workerThroughput(ctx, options.smoke ? 4 : 32),
    };
  }

  process.stderr.write("collab bench: agreement sweep\n");
  const sweep = await agreementSweep(ctx);
  process.stderr.write("collab bench: cloud compute\n");
  const compute = await cloudCompute(ctx, maxTokens);
  process.stderr.write("collab bench: latency and bytes over the emulated link\n");
  const wire = await latencyAndBytes(ctx, maxTokens);
  process.stderr.write("collab bench: worker throughput\n");
  const throughput = await workerThroughput(ctx, options.smoke ? 4 : 32);

  const at99 = compute.rows.find((r) => r.target === 0.99);
  const result = {
    name: "collab",
    model: "models/tandem-demo",
    split: ctx.split,
    link: {
      kind: "userspace TCP proxy on loopback (kernel has no netem)",
      one_way_delay_ms: LINK.oneWayDelayMs,
      rate_mbit: LINK.rateMbit,
    },
    positions_evaluated: sweep.positions,
    cloud_compute_saved_at_99pct_agreement: at99 ? 1 - at99.cloud_compute_relative : undefined,
    agreement_at_99pct_target: sweep.policies.find((p) => p.target === 0.99)?.agreement,
    escalated_share_at_99pct_target: sweep.policies.find((p) => p.target === 0.99)?.escalated_share,
    p50_token_latency_ms: Object.fromEntries(Object.entries(wire.latency).map(([k, v]) => [k, v.p50])),
    p95_token_latency_ms: Object.fromEntries(Object.entries(wire.latency).map(([k, v]) => [k, v.p95])),
    first_token_latency_ms: Object.fromEntries(
      Object.entries(wire.latency).map(([k, v]) => [k, v.first_token_ms]),
    ),
    bytes_per_escalated_token: Object.fromEntries(
      Object.entries(wire.bytes).map(([k, v]) => [k, v.per_escalated_token]),
    ),
    bytes_per_generated_token: Object.fromEntries(
      Object.entries(wire.bytes).map(([k, v]) => [k, v.per_generated_token]),
    ),
    agreement: sweep.codecAgreement,
    batched_speedup_16_sessions: throughput.find((r) => r.sessions === 16)?.speedup,
    sweep: sweep.policies,
    cloud_compute: compute,
    worker_throughput: throughput,
    plot: options.smoke ? undefined : "bench/results/collab.png",
  };
  if (!options.smoke) plot(result.sweep, compute.rows, wire.latency, PLOT);
  return result;
}

function plot(
  sweep: { target: number; escalated_share: number; agreement: number }[],
  compute: { target: number; cloud_compute_relative: number }[],
  latency: Record<string, { p50: number; p95: number }>,
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
  g.fillText("per calibrated agreement target:", left - 40, top - 30);
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
