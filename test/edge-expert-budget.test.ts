/**
 * An edge agent running the shipped MoE demo model with less memory for experts than its
 * segment's experts take (expertBudgetMb): it generates what the agent with every expert
 * in its graph generates, over the public gRPC API.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EDGE_CONFIG_SCHEMA, startEdgeAgent } from "@tandem/edge-agent";
import { Registry } from "@tandem/common/metrics";
import { calibrate, FREED_MEMORY_ENV, loadCheckpoint, Tokenizer, writeCalibration } from "@tandem/runtime";
import { generate, startProgram } from "@tandem/testkit";

const MOE = join(import.meta.dirname, "..", "models", "tandem-demo-moe");
const PROMPT = "Once upon a time, the little fox";

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "tandem-expert-budget-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The expert cache's metrics of an agent, as Prometheus would scrape them. */
async function expertCacheMetrics(registry: Registry) {
  const value = async (name: string) =>
    (await registry.getSingleMetric(`tandem_edge_expert_cache_${name}`)!.get()).values[0].value;
  return {
    hits: await value("hits_total"),
    misses: await value("misses_total"),
    evictions: await value("evictions_total"),
    prefetches: await value("prefetches_total"),
    prefetchHits: await value("prefetch_hits_total"),
    residentBytes: await value("resident_bytes"),
    expertsBytes: await value("experts_bytes"),
  };
}

/** The token ids an edge agent answers alone, with or without an expert budget, and its metrics. */
async function edgeOnly(expertBudgetMb?: number, settings: Record<string, unknown> = {}) {
  const registry = new Registry();
  const edge = await startEdgeAgent(
    EDGE_CONFIG_SCHEMA.parse({
      model: MOE,
      split: 3,
      exitLayers: [3],
      port: 0,
      httpAddress: "",
      expertBudgetMb,
      ...settings,
    }),
    pino({ level: "silent" }),
    { cacheDir: join(dir, "graphs"), metrics: registry },
  );
  try {
    const result = await generate(edge.server.address, {
      text: PROMPT,
      maxTokens: 24,
      mode: "MODE_EDGE_ONLY",
    });
    expect(result.error).toBeUndefined();
    expect(result.tokens).toHaveLength(24);
    const tokens = result.tokens.map((t) => t.id);
    return { tokens, metrics: expertBudgetMb === undefined ? undefined : await expertCacheMetrics(registry) };
  } finally {
    await edge.close();
  }
}

describe("an edge agent with an expert budget (models/tandem-demo-moe)", () => {
  it("generates, with a quarter of its segment's experts in memory, the tokens it generates with all of them in its graph", async () => {
    // Layers [0, 3): 24 experts of 3 × 256 × 192 fp32 weights, 0.5625 MB each, 13.5 MB in all.
    const budgetMb = 13.5 / 4;
    const expected = await edgeOnly();
    const budgeted = await edgeOnly(budgetMb);
    expect(budgeted.tokens).toEqual(expected.tokens);
    // Its metrics tell how the budget fits the traffic: every expert run counted, some
    // loaded from disk and some dropped, and never more in memory than the budget.
    const { hits, misses, evictions, residentBytes } = budgeted.metrics!;
    expect(hits + misses).toBeGreaterThanOrEqual(24 * 3 * 2); // ≥ a run per token, layer and chosen expert
    expect(misses).toBeGreaterThan(0);
    expect(evictions).toBeGreaterThan(0);
    expect(residentBytes).toBeGreaterThan(0);
    expect(residentBytes).toBeLessThanOrEqual(budgetMb * 2 ** 20);
  });

  it("loads its experts in threads of their own, predicting each next layer's, and generates what one thread generates", async () => {
    const budgetMb = 13.5 / 4;
    const inOneThread = await edgeOnly(budgetMb); // expertThreads: 0, the default
    const threaded = await edgeOnly(budgetMb, { expertThreads: 2 });
    expect(threaded.tokens).toEqual(inOneThread.tokens);
    expect(inOneThread.metrics!.prefetches).toBe(0);
    // The trained routers make the next layer's choice predictable from the layer before:
    // most experts loaded ahead are then run.
    const { prefetches, prefetchHits } = threaded.metrics!;
    expect(prefetches).toBeGreaterThan(0);
    expect(prefetchHits / prefetches).toBeGreaterThan(0.5);
  });

  it("runs its expert threads as the installed program too (the threads' program is bundled beside the agent's)", async () => {
    const expected = await edgeOnly(13.5 / 4);
    const edge = await startProgram(
      "tandem-edge",
      { model: MOE, split: 3, exitLayers: "3", port: 0, expertBudgetMb: 13.5 / 4, expertThreads: 2 },
      { TANDEM_CACHE_DIR: dir, [FREED_MEMORY_ENV.name]: FREED_MEMORY_ENV.value },
    );
    try {
      const result = await generate(edge.address, { text: PROMPT, maxTokens: 24, mode: "MODE_EDGE_ONLY" });
      expect(result.error).toBeUndefined();
      expect(result.tokens.map((t) => t.id)).toEqual(expected.tokens);
    } finally {
      await edge.kill();
    }
    expect(edge.output()).not.toMatch(/expert thread/);
  });

  it("keeps rarely chosen experts in int4 by the activations its calibration measured, decoding what the same mix all in memory decodes", async () => {
    const checkpoint = await loadCheckpoint(MOE);
    const tokenizer = await Tokenizer.fromFile(checkpoint.tokenizerPath!);
    const text = readFileSync(join(MOE, "..", "tandem-demo", "heldout.txt"), "utf8");
    const calibration = await calibrate(checkpoint, tokenizer, {
      split: 3,
      exitLayers: [3],
      text,
      maxTokens: 1280,
      cacheDir: join(dir, "graphs"),
    });
    // Every position of the text chose 2 experts in each of the 6 layers.
    const activations = calibration.summary.expertActivations!;
    expect(activations).toHaveLength(6 * 8);
    expect(activations.reduce((a, b) => a + b, 0)).toBe(calibration.summary.text.tokens * 6 * 2);
    const file = join(dir, "moe.calibration.safetensors");
    await writeCalibration(file, calibration);

    const settings = { calibration: file, expertColdWeights: "int4", expertHotShare: 0.6 };
    const allInMemory = await edgeOnly(1000, settings);
    const budgeted = await edgeOnly(13.5 / 4, settings);
    expect(budgeted.tokens).toEqual(allInMemory.tokens);
    expect(budgeted.metrics!.evictions).toBeGreaterThan(0);
    // The cold experts are int4 (under a sixth of fp32's bytes), the hot ones fp32: the
    // segment's 24 experts take less than their 13.5 MB in fp32, more than in int4 alone.
    const { expertsBytes } = allInMemory.metrics!;
    expect(expertsBytes).toBeLessThan(13.5 * 2 ** 20 * 0.9);
    expect(expertsBytes).toBeGreaterThan((13.5 * 2 ** 20) / 6);
    await expect(edgeOnly(undefined, { expertColdWeights: "int4" })).rejects.toThrow(
      /expertColdWeights: applies with expertBudgetMb/,
    );
    await expect(edgeOnly(4, { expertColdWeights: "int4" })).rejects.toThrow(
      /expertColdWeights: needs a calibration that measured the experts' activations/,
    );
  });

  it("refuses an expert budget on a dense model, naming expertBudgetMb", async () => {
    const dense = join(import.meta.dirname, "..", "models", "tandem-demo");
    await expect(
      startEdgeAgent(
        EDGE_CONFIG_SCHEMA.parse({ model: dense, port: 0, httpAddress: "", expertBudgetMb: 4 }),
        pino({ level: "silent" }),
        { cacheDir: join(dir, "graphs") },
      ),
    ).rejects.toThrow(/expertBudgetMb/);
  });
});
