import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  loadCheckpoint,
  KV_BLOCK_POSITIONS,
  SegmentModel,
  SegmentSessions,
  segmentSpec,
} from "@tandem/runtime";
import { TINY_LLAMA, writeRandomCheckpoint } from "@tandem/runtime/testing";
import { ContextLostError } from "@tandem/common";
import { ContextManager } from "./context-manager.ts";
import { DecodeBatcher } from "./decode-batcher.ts";

let dir: string;
let sessions: SegmentSessions;
const HIDDEN = 64;
const hidden = (count: number, seed: number) =>
  Float32Array.from({ length: count * HIDDEN }, (_, i) => Math.sin(i * 0.37 + seed));

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "tandem-contexts-"));
  // The tiny Llama preset: hidden 64, 4 layers, 4 heads over 2 KV heads (head dim 16).
  await writeRandomCheckpoint(join(dir, "model"), { ...TINY_LLAMA, tieWordEmbeddings: true, seed: 3 });
  const checkpoint = await loadCheckpoint(join(dir, "model"));
  sessions = new SegmentSessions(
    await SegmentModel.load(checkpoint, segmentSpec({ fromLayer: 2, toLayer: 4, finalHead: true }), {
      cacheDir: join(dir, "graphs"),
    }),
  );
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("ContextManager", () => {
  // Per position: 2 layers × (key + value) × 2 KV heads × 16 dims × 4 bytes = 512 bytes;
  // a session's cache takes whole blocks of positions.
  const perBlock = 2 * 2 * 2 * 16 * 4 * KV_BLOCK_POSITIONS;

  it("accounts the KV memory sessions take and evicts the least recently used idle session over its budget", async () => {
    const contexts = new ContextManager(sessions, new DecodeBatcher(sessions), {
      memoryBudgetBytes: 2.5 * perBlock,
    });
    await contexts.append("a", { start: 0, hidden: hidden(10, 1), count: 10 });
    await contexts.append("b", { start: 0, hidden: hidden(10, 2), count: 10 });
    expect(contexts.stats()).toMatchObject({ sessions: 2, kvBytes: 2 * perBlock, evictions: 0 });
    await contexts.append("a", { start: 10, hidden: hidden(1, 3), count: 1 }); // a is now the most recently used
    await contexts.append("c", { start: 0, hidden: hidden(10, 4), count: 10 }); // over budget: b goes
    expect(contexts.stats()).toMatchObject({ sessions: 2, evictions: 1 });
    expect(contexts.contextLength("b")).toBe(0);
    expect(contexts.contextLength("a")).toBe(11);
    // The evicted session comes back: the worker asks for its context from position 0.
    await expect(contexts.append("b", { start: 10, hidden: hidden(1, 5), count: 1 })).rejects.toBeInstanceOf(
      ContextLostError,
    );
    await expect(contexts.append("b", { start: 10, hidden: hidden(1, 5), count: 1 })).rejects.toMatchObject({
      resumeFrom: 0,
    });
    for (const id of contexts.sessionIds()) contexts.release(id);
  });

  it("counts each KV pool whole; evicting a session moves the rows of the least occupied pool into the freed row and frees that pool, so one eviction makes room", async () => {
    // Pools of two rows over the same model: a and b share one, c needs a second.
    const pooled = new SegmentSessions(sessions.model, { batchRows: 2 });
    const batcher = new DecodeBatcher(pooled, { maxBatch: 2 });
    const contexts = new ContextManager(pooled, batcher, { memoryBudgetBytes: 2.5 * perBlock });
    await contexts.append("a", { start: 0, hidden: hidden(10, 1), count: 10 });
    await contexts.append("b", { start: 0, hidden: hidden(10, 2), count: 10 });
    // One decode step each, in the same turn: one batched step on their rows of the pool.
    const [, bStep] = await Promise.all([
      contexts.append("a", { start: 10, hidden: hidden(1, 3), count: 1 }),
      contexts.append("b", { start: 10, hidden: hidden(1, 4), count: 1 }),
    ]);
    expect(batcher.batchSizes.get(2)).toBe(1);
    expect([pooled.kvBytes("a"), pooled.kvBytes("b")]).toEqual([perBlock, perBlock]);
    expect(contexts.stats()).toMatchObject({ sessions: 2, kvBytes: 2 * perBlock, evictions: 0 });

    // A third session needs a second pool and passes the budget: a, the least recently
    // used, goes; c moves into its row and the second pool is freed. b keeps its context.
    const cFirst = await contexts.append("c", { start: 0, hidden: hidden(10, 5), count: 10 });
    expect(contexts.stats()).toMatchObject({ sessions: 2, kvBytes: 2 * perBlock, evictions: 1 });
    expect(contexts.contextLength("a")).toBe(0);
    expect([contexts.contextLength("b"), contexts.contextLength("c")]).toEqual([11, 10]);
    expect(pooled.batchGroup("c")).toBe(pooled.batchGroup("b"));

    // b and c go on as sessions given the same positions from scratch (c's cache moved).
    const [next, cNext] = await Promise.all([
      contexts.append("b", { start: 11, hidden: hidden(1, 6), count: 1 }),
      contexts.append("c", { start: 10, hidden: hidden(1, 7), count: 1 }),
    ]);
    sessions.open("b-again");
    await sessions.forward("b-again", { hidden: hidden(10, 2), count: 10 });
    const again = await sessions.forward("b-again", { hidden: hidden(1, 4), count: 1 });
    expect(again.exits[0].token).toEqual(bStep.exits[0].token);
    const nextAgain = await sessions.forward("b-again", { hidden: hidden(1, 6), count: 1 });
    expect(nextAgain.exits[0].token).toEqual(next.exits[0].token);
    expect(nextAgain.exits[0].prob[0]).toBeCloseTo(next.exits[0].prob[0], 5);
    sessions.open("c-again");
    const cAgain = await sessions.forward("c-again", { hidden: hidden(10, 5), count: 10 });
    expect(cAgain.exits[0].prob[0]).toBeCloseTo(cFirst.exits[0].prob[0], 5);
    const cNextAgain = await sessions.forward("c-again", { hidden: hidden(1, 7), count: 1 });
    expect(cNextAgain.exits[0].token).toEqual(cNext.exits[0].token);
    expect(cNextAgain.exits[0].prob[0]).toBeCloseTo(cNext.exits[0].prob[0], 5);
    for (const id of ["b-again", "c-again"]) sessions.release(id);
    for (const id of contexts.sessionIds()) contexts.release(id);
    expect(pooled.totalKvBytes()).toBe(0);
  });

  it("recomputes from a frame that starts before the end of the context (a resent frame)", async () => {
    const contexts = new ContextManager(sessions, new DecodeBatcher(sessions));
    const first = await contexts.append("r", { start: 0, hidden: hidden(6, 7), count: 6 });
    await contexts.append("r", { start: 6, hidden: hidden(2, 8), count: 2 });
    // The edge resends positions 4.. after a lost reply: the result equals the first run.
    const again = await contexts.append("r", {
      start: 4,
      hidden: hidden(6, 7).subarray(4 * HIDDEN),
      count: 2,
    });
    expect(contexts.contextLength("r")).toBe(6);
    expect(again.exits[0].token).toEqual(first.exits[0].token);
    contexts.release("r");
  });
});
