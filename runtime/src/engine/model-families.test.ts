/**
 * The model families Tandem supports, each as a random checkpoint of a real model's shape
 * written with that model's own config.json (fewer layers), loaded the way a user's
 * download is: the segment graph equals the reference forward.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadCheckpoint } from "../checkpoint/load-checkpoint.ts";
import { segmentSpec } from "../graph/segment-spec.ts";
import { ReferenceModel } from "../reference/reference-model.ts";
import { writeRandomCheckpoint } from "../testing/random-checkpoint.ts";
import { realShapeSpec, type RealModelName } from "../testing/real-model-configs.ts";
import { SegmentModel } from "./segment-model.ts";
import { SegmentSessions } from "./segment-sessions.ts";

/** What each real shape exercises, beside its family. */
const FAMILIES: Partial<Record<RealModelName, string>> = {
  "Llama-3.2-1B": "llama3 rope scaling, 32 heads over 8 KV heads, tied, vocab 128256",
  "TinyLlama-1.1B": "untied LM head, GQA ratio 8",
  "SmolLM2-360M": "15 heads over 5 KV heads",
  "Qwen2.5-0.5B": "q/k/v biases, 14 heads over 2 KV heads, tied, vocab 151936",
  "Qwen3-0.6B": "per-head q/k norms, head_dim 128 over hidden 1024",
};

/**
 * Shapes whose one layer alone is 0.2–1.4B parameters (one to several minutes each here):
 * run with TANDEM_LARGE_SHAPES=1. Mistral's graph is Llama's; its config's own keys (sliding_window
 * null) are parsed in config-parser.test.ts.
 */
const LARGE_FAMILIES: Partial<Record<RealModelName, string>> = {
  "Mistral-7B-v0.3": "hidden 4096, untied, no sliding window",
  "Qwen3-30B-A3B": "128 experts of width 768, top 8 renormalised, q/k norms",
  "Mixtral-8x7B-v0.1": "8 experts of width 14336, top 2, hidden 4096",
};

const PROMPT = [1, 200, 17, 255, 42, 3];

let workDir: string;

beforeAll(() => {
  workDir = mkdtempSync(join(tmpdir(), "tandem-families-"));
});
afterAll(() => rmSync(workDir, { recursive: true, force: true }));

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

describe("random checkpoints of real models' shapes, with their config.json: graph = reference forward", () => {
  const large = process.env.TANDEM_LARGE_SHAPES === "1";
  const families = { ...FAMILIES, ...(large ? LARGE_FAMILIES : {}) };
  for (const [name, exercises] of Object.entries(families) as [RealModelName, string][]) {
    const timeout = name in LARGE_FAMILIES ? 900_000 : 240_000;
    it(`${name} (${exercises}): logits at every position within 1e-4`, { timeout }, async () => {
      const dir = join(workDir, name);
      await writeRandomCheckpoint(dir, realShapeSpec(name, { numLayers: 1 }));
      const checkpoint = await loadCheckpoint(dir);
      const model = await SegmentModel.load(
        checkpoint,
        segmentSpec({ fromLayer: 0, toLayer: 1, finalHead: true, positions: "all", logits: true }),
        { cacheDir: join(workDir, "graphs") },
      );
      const sessions = new SegmentSessions(model);
      sessions.open("s");
      const logits = (await sessions.forward("s", { ids: PROMPT })).exits[0].logits!;
      await model.release();
      const reference = new ReferenceModel(checkpoint.config, checkpoint.weights).logits(PROMPT);
      expect(maxAbsDiff(logits, reference)).toBeLessThanOrEqual(1e-4);
      rmSync(dir, { recursive: true, force: true });
    });
  }
});
