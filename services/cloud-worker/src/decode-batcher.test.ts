import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { InvalidArgumentError } from "@tandem/common";
import { loadCheckpoint, SegmentModel, SegmentSessions, segmentSpec } from "@tandem/runtime";
import { TINY_LLAMA, writeRandomCheckpoint } from "@tandem/runtime/testing";
import { DecodeBatcher, MIN_PREFILL_CHUNK } from "./decode-batcher.ts";

let dir: string;
let model: SegmentModel;
const HIDDEN = 64;
const MAX_POSITIONS = 160;
const hidden = (count: number, seed: number) =>
  Float32Array.from({ length: count * HIDDEN }, (_, i) => Math.sin(i * 0.37 + seed));

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "tandem-batcher-"));
  await writeRandomCheckpoint(join(dir, "model"), { ...TINY_LLAMA, maxPositions: MAX_POSITIONS, seed: 5 });
  const checkpoint = await loadCheckpoint(join(dir, "model"));
  // Every position's exits and hidden states, so a chunked frame's whole result is checked.
  model = await SegmentModel.load(
    checkpoint,
    segmentSpec({
      fromLayer: 2,
      toLayer: 4,
      finalHead: true,
      logits: true,
      positions: "all",
      outputHidden: true,
    }),
    { cacheDir: join(dir, "graphs") },
  );
});
afterAll(async () => {
  await model.release();
  rmSync(dir, { recursive: true, force: true });
});

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

describe("DecodeBatcher: catch-up frames in chunks beside the decode batch (chunked prefill)", () => {
  it("runs a long frame a chunk a step, so a decoding session's steps finish first, and its result equals the frame run whole", async () => {
    const sessions = new SegmentSessions(model, { batchRows: 4 });
    const batcher = new DecodeBatcher(sessions, { maxBatch: 4, stepTokenBudget: 20 });
    sessions.open("decoder");
    sessions.open("joiner");
    await sessions.forward("decoder", { hidden: hidden(8, 1), count: 8 });

    const finished: string[] = [];
    const frame = batcher.step("joiner", hidden(100, 2), 100).then((step) => {
      finished.push("frame");
      return step;
    });
    for (let i = 0; i < 3; i++) {
      await batcher.step("decoder", hidden(1, 10 + i));
      finished.push(`decode ${i}`);
    }
    const step = await frame;
    // 100 positions at 19 a step (the budget less one decode): the decoder's three steps
    // ran in the frame's first three.
    expect(finished).toEqual(["decode 0", "decode 1", "decode 2", "frame"]);
    expect(batcher.batchSizes.get(1)).toBe(3);

    const whole = new SegmentSessions(model);
    whole.open("joiner");
    const want = await whole.forward("joiner", { hidden: hidden(100, 2), count: 100 });
    expect(step.start).toBe(0);
    expect(step.count).toBe(100);
    expect(sessions.length("joiner")).toBe(100);
    expect(maxAbsDiff(step.hidden!, want.hidden!)).toBeLessThanOrEqual(1e-4);
    expect(step.exits[0].token).toEqual(want.exits[0].token);
    expect(maxAbsDiff(step.exits[0].logits!, want.exits[0].logits!)).toBeLessThanOrEqual(1e-4);
  });

  it("gives a chunk at least MIN_PREFILL_CHUNK positions however full the decode batch", async () => {
    const sessions = new SegmentSessions(model, { batchRows: 4 });
    const batcher = new DecodeBatcher(sessions, { maxBatch: 4, stepTokenBudget: 2 });
    for (const id of ["a", "b", "c", "joiner"]) sessions.open(id);
    for (const id of ["a", "b", "c"]) await sessions.forward(id, { hidden: hidden(4, 3), count: 4 });
    // The chunk sizes the joiner's frame runs in, as the sessions are asked for them.
    const chunks: number[] = [];
    const forward = sessions.forward.bind(sessions);
    sessions.forward = (id, input) => {
      if (id === "joiner" && "count" in input) chunks.push(input.count);
      return forward(id, input);
    };
    const frame = batcher.step("joiner", hidden(3 * MIN_PREFILL_CHUNK, 4), 3 * MIN_PREFILL_CHUNK);
    // Three sessions decode in lockstep beside it: a full decode batch takes all the
    // budget, and the frame still advances MIN_PREFILL_CHUNK positions a step.
    for (let step = 0; step < 3; step++)
      await Promise.all(["a", "b", "c"].map((id) => batcher.step(id, hidden(1, step))));
    expect((await frame).count).toBe(3 * MIN_PREFILL_CHUNK);
    expect(chunks).toEqual([MIN_PREFILL_CHUNK, MIN_PREFILL_CHUNK, MIN_PREFILL_CHUNK]);
    expect(batcher.batchSizes.get(3)).toBe(3);
  });

  it("evaluates a frame's last head positions across its chunks (positions \"tail\"), equal to those rows of every position's head", async () => {
    const checkpoint = await loadCheckpoint(join(dir, "model"));
    const tail = await SegmentModel.load(
      checkpoint,
      segmentSpec({ fromLayer: 2, toLayer: 4, finalHead: true, logits: true, positions: "tail" }),
      { cacheDir: join(dir, "graphs") },
    );
    try {
      const sessions = new SegmentSessions(tail);
      // Chunks of 20: the frame's last 25 positions span its last two chunks (of 40 and 60).
      const batcher = new DecodeBatcher(sessions, { stepTokenBudget: 20 });
      sessions.open("s");
      const step = await batcher.step("s", hidden(60, 8), 60, 25);
      const everyRow = new SegmentSessions(model);
      everyRow.open("s");
      const want = (await everyRow.forward("s", { hidden: hidden(60, 8), count: 60 })).exits[0];
      const vocab = checkpoint.config.vocabSize;
      expect(step.exits[0].token).toEqual(want.token.slice(35));
      expect(maxAbsDiff(step.exits[0].logits!, want.logits!.subarray(35 * vocab))).toBeLessThanOrEqual(1e-4);
      // One position's head alone, as every decode step and an unverified frame ask.
      const decode = await batcher.step("s", hidden(1, 9));
      expect(decode.exits[0].token).toHaveLength(1);
      await expect(
        sessions.forward("s", { hidden: hidden(2, 9), count: 2, headPositions: 3 }),
      ).rejects.toThrow(/headPositions/);
      const last = new SegmentSessions(model);
      last.open("x");
      await expect(last.forward("x", { hidden: hidden(2, 9), count: 2, headPositions: 1 })).rejects.toThrow(
        /not a tail/,
      );
    } finally {
      await tail.release();
    }
  });

  it("undoes a frame whose later chunk fails, so the session is as it was, and fails it with that chunk's error", async () => {
    const sessions = new SegmentSessions(model);
    const batcher = new DecodeBatcher(sessions, { stepTokenBudget: 32 });
    sessions.open("s");
    await sessions.forward("s", { hidden: hidden(100, 5), count: 100 });
    // 64 more would pass the model's 160 positions: the first 32 fit, the second chunk's
    // room check fails it. (An edge's frame is refused whole before this; here the
    // batcher's own guarantee is under test.)
    const failed = batcher.step("s", hidden(64, 6), 64);
    await expect(failed).rejects.toBeInstanceOf(InvalidArgumentError);
    expect(sessions.length("s")).toBe(100);
    const next = await batcher.step("s", hidden(1, 7));
    expect(next.start).toBe(100);
  });
});
