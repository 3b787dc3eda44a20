/**
 * Worker decode throughput of the collab benchmark: tokens per second of the cloud
 * worker's context manager (KV pools + continuous batching, as the worker runs it) on the
 * 110M bench checkpoint in fp32 with the worker holding its upper half, the demo model in
 * smoke runs.
 *   - steady: 1, 16 and 64 sessions each decoding, all at once; with the batcher off (each
 *     frame its own runtime call) as the baseline, and on with the worker's defaults
 *     (64 sessions also with maxBatch 64). A lone session with the batcher on shows what
 *     the batcher costs when there is nothing to batch.
 *   - churn: 16 sessions at all times, but each leaves after 4–12 decode steps and a new one
 *     takes its place with a catch-up frame of 16 positions (an edge's first escalation),
 *     which the batcher runs in chunks beside the decoders.
 * Speedups are against one session decoding alone with the batcher off.
 */
import { type Checkpoint, loadCheckpoint, SegmentModel, SegmentSessions, segmentSpec } from "@tandem/runtime";
import {
  ContextManager,
  DecodeBatcher,
  DEFAULT_DECODE_BATCHER_OPTIONS,
  type DecodeBatcherOptions,
} from "@tandem/cloud-worker";
import { randomInt, seededRandom } from "../seeded-random.ts";
import { ensureSizedModel } from "../sized-models.ts";
import { median } from "../statistics.ts";
import type { Context } from "./collab-context.ts";

/** Positions each steady session holds before it is timed. */
const STEADY_CONTEXT = 32;
/** The catch-up frame a session joining the churn run arrives with. */
const JOIN_FRAME = 16;
/** A churn session leaves after this many decode steps, drawn uniformly. */
const CHURN_STEPS = [4, 12] as const;
const CHURN_SESSIONS = 16;
/** Room enough that no session is evicted while measured. */
const MEMORY_BUDGET_BYTES = 8 * 2 ** 30;

interface Setup {
  model: SegmentModel;
  /** Hidden states at the split: a session's frames are slices of these, cyclically. */
  hidden: Float32Array;
  states: number;
  hiddenSize: number;
}

type Mode = { batching: false } | { batching: true; maxBatch: number };

/** A worker's context manager over `model`, batching as `mode` says. */
function workerContexts(setup: Setup, mode: Mode): ContextManager {
  const maxBatch = mode.batching ? mode.maxBatch : 1;
  const sessions = new SegmentSessions(setup.model, { batchRows: maxBatch });
  const options: DecodeBatcherOptions = { enabled: mode.batching, maxBatch };
  return new ContextManager(sessions, new DecodeBatcher(sessions, options), {
    memoryBudgetBytes: MEMORY_BUDGET_BYTES,
  });
}

/** `count` hidden states from position `from`, as an edge would send them. */
function frame(setup: Setup, from: number, count: number): Float32Array {
  const out = new Float32Array(count * setup.hiddenSize);
  for (let i = 0; i < count; i++) {
    const state = (from + i) % setup.states;
    out.set(
      setup.hidden.subarray(state * setup.hiddenSize, (state + 1) * setup.hiddenSize),
      i * setup.hiddenSize,
    );
  }
  return out;
}

/** Decode tokens per second of `sessions` sessions each taking `steps` steps at once. */
async function steadyRate(setup: Setup, mode: Mode, sessions: number, steps: number): Promise<number> {
  const contexts = workerContexts(setup, mode);
  await Promise.all(
    Array.from({ length: sessions }, (_, s) =>
      contexts.append(`s${s}`, { start: 0, hidden: frame(setup, s, STEADY_CONTEXT), count: STEADY_CONTEXT }),
    ),
  );
  const start = performance.now();
  await Promise.all(
    Array.from({ length: sessions }, async (_, s) => {
      for (let p = STEADY_CONTEXT; p < STEADY_CONTEXT + steps; p++)
        await contexts.append(`s${s}`, { start: p, hidden: frame(setup, s + p, 1), count: 1 });
    }),
  );
  const rate = (sessions * steps) / ((performance.now() - start) / 1000);
  for (let s = 0; s < sessions; s++) contexts.release(`s${s}`);
  return rate;
}

/**
 * CHURN_SESSIONS lanes, each running sessions one after another until it has decoded
 * `steps` tokens: a session joins with a JOIN_FRAME-position frame, decodes 4–12 tokens
 * and leaves. Returns decode tokens and all positions run (catch-up included) per second.
 */
async function churnRates(setup: Setup, mode: Mode, steps: number, seed: number) {
  const contexts = workerContexts(setup, mode);
  const random = seededRandom(seed);
  let joins = 0;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: CHURN_SESSIONS }, async (_, lane) => {
      let decoded = 0;
      while (decoded < steps) {
        const id = `lane${lane}-${joins++}`;
        const length = Math.min(steps - decoded, randomInt(random, CHURN_STEPS[0], CHURN_STEPS[1]));
        await contexts.append(id, { start: 0, hidden: frame(setup, lane, JOIN_FRAME), count: JOIN_FRAME });
        for (let p = JOIN_FRAME; p < JOIN_FRAME + length; p++)
          await contexts.append(id, { start: p, hidden: frame(setup, lane + p, 1), count: 1 });
        decoded += length;
        contexts.release(id);
      }
    }),
  );
  const seconds = (performance.now() - start) / 1000;
  const tokens = CHURN_SESSIONS * steps;
  return {
    decode_tokens_per_s: tokens / seconds,
    positions_per_s: (tokens + joins * JOIN_FRAME) / seconds,
    sessions_joined: joins,
  };
}

/** The measured model: the 110M bench checkpoint split in half, or the demo model's split in smoke runs. */
async function setUp(ctx: Context): Promise<{ setup: Setup; label: string; split: number }> {
  const log = (line: string) => process.stderr.write(`collab bench: ${line}\n`);
  let checkpoint: Checkpoint = ctx.checkpoint;
  let label = "models/tandem-demo";
  let split = ctx.split;
  if (!ctx.smoke) {
    checkpoint = await loadCheckpoint(await ensureSizedModel("110M", log));
    label = "110M bench checkpoint (generated)";
    split = checkpoint.config.numLayers / 2;
  }
  const { numLayers, hiddenSize, vocabSize } = checkpoint.config;
  const model = await SegmentModel.load(
    checkpoint,
    segmentSpec({ fromLayer: split, toLayer: numLayers, finalHead: true, logits: true }),
  );
  const lower = new SegmentSessions(
    await SegmentModel.load(checkpoint, segmentSpec({ fromLayer: 0, toLayer: split, outputHidden: true })),
  );
  const states = 64;
  lower.open("h");
  const ids = Array.from({ length: states }, (_, i) => (i * 7919 + 11) % vocabSize);
  const hidden = (await lower.forward("h", { ids })).hidden!;
  await lower.model.release();
  return { setup: { model, hidden, states, hiddenSize }, label, split };
}

/** Steady and churn throughput of the worker; medians over rounds that alternate the order. */
export async function workerThroughput(ctx: Context) {
  const { setup, label, split } = await setUp(ctx);
  const rounds = ctx.smoke ? 1 : 3;
  const steps = ctx.smoke ? 4 : 64;
  const defaults: Mode = { batching: true, maxBatch: DEFAULT_DECODE_BATCHER_OPTIONS.maxBatch };
  const cases: { sessions: number; mode: Mode }[] = [
    { sessions: 1, mode: { batching: false } },
    { sessions: 1, mode: defaults },
    { sessions: 16, mode: { batching: false } },
    { sessions: 16, mode: defaults },
    { sessions: 64, mode: defaults },
    { sessions: 64, mode: { batching: true, maxBatch: 64 } },
  ];
  const steady = cases.map(() => [] as number[]);
  const churn: Awaited<ReturnType<typeof churnRates>>[] = [];
  for (let round = 0; round < rounds; round++) {
    // Alternating the order: a single pass favoured whichever ran second by up to 20% here.
    const order = cases.map((_, i) => i);
    if (round % 2 === 1) order.reverse();
    for (const i of order) {
      const { sessions, mode } = cases[i];
      process.stderr.write(`collab bench: worker throughput, ${sessions} sessions, round ${round + 1}\n`);
      steady[i].push(await steadyRate(setup, mode, sessions, steps));
    }
    process.stderr.write(`collab bench: worker throughput, churn, round ${round + 1}\n`);
    churn.push(await churnRates(setup, defaults, steps, round + 1));
  }
  await setup.model.release();

  const rate = (i: number) => median(steady[i]);
  const lone = rate(0);
  const rows = cases.map(({ sessions, mode }, i) => ({
    sessions,
    batching: mode.batching,
    max_batch: mode.batching ? mode.maxBatch : 1,
    tokens_per_s: rate(i),
    speedup_vs_one_session: rate(i) / lone,
  }));
  const churnDecode = median(churn.map((c) => c.decode_tokens_per_s));
  const churnPositions = median(churn.map((c) => c.positions_per_s));
  const steady16 = rate(3);
  return {
    model: label,
    worker_layers: `[${split}, ${setup.model.config.numLayers}) + head`,
    weights: "fp32",
    steps_per_session: steps,
    rounds,
    batched_speedup_16_sessions: steady16 / lone,
    batched_speedup_64_sessions: rate(4) / lone,
    lone_session_batched_vs_unbatched: rate(1) / lone,
    // Positions the worker ran per second with sessions coming and going, against the
    // steady figure at the same concurrency; decode tokens alone beside it.
    churn_vs_steady: churnPositions / steady16,
    churn_decode_vs_steady: churnDecode / steady16,
    churn: {
      sessions: CHURN_SESSIONS,
      decode_steps_per_session: CHURN_STEPS,
      join_frame_positions: JOIN_FRAME,
      decode_tokens_per_s: churnDecode,
      positions_per_s: churnPositions,
      sessions_joined_per_round: median(churn.map((c) => c.sessions_joined)),
    },
    rows,
  };
}
