/**
 * Worker decode throughput of the collab benchmark: tokens per second of the cloud
 * worker's context manager with 1, 4 and 16 concurrent sessions, with decode batching on
 * and off, to show what batching concurrent edges into one runtime call buys.
 */
import { SegmentModel, SegmentSessions, segmentSpec } from "@tandem/runtime";
import { ContextManager, DecodeBatcher } from "@tandem/cloud-worker";
import { median } from "../statistics.ts";
import type { Context } from "./collab-context.ts";

/** Decode throughput of the worker's context manager with concurrent sessions. */
export async function workerThroughput(ctx: Context, stepsPerSession: number) {
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
