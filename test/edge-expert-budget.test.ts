/**
 * An edge agent running the shipped MoE demo model with less memory for experts than its
 * segment's experts take (expertBudgetMb): it generates what the agent with every expert
 * in its graph generates, over the public gRPC API.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EDGE_CONFIG_SCHEMA, startEdgeAgent } from "@tandem/edge-agent";
import { generate } from "@tandem/testkit";

const MOE = join(import.meta.dirname, "..", "models", "tandem-demo-moe");
const PROMPT = "Once upon a time, the little fox";

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "tandem-expert-budget-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The token ids an edge agent answers alone, with or without an expert budget. */
async function edgeOnlyTokens(expertBudgetMb?: number): Promise<number[]> {
  const edge = await startEdgeAgent(
    EDGE_CONFIG_SCHEMA.parse({
      model: MOE,
      split: 3,
      exitLayers: [3],
      port: 0,
      httpAddress: "",
      expertBudgetMb,
    }),
    pino({ level: "silent" }),
    { cacheDir: join(dir, "graphs") },
  );
  try {
    const result = await generate(edge.server.address, {
      text: PROMPT,
      maxTokens: 24,
      mode: "MODE_EDGE_ONLY",
    });
    expect(result.error).toBeUndefined();
    expect(result.tokens).toHaveLength(24);
    return result.tokens.map((t) => t.id);
  } finally {
    await edge.close();
  }
}

describe("an edge agent with an expert budget (models/tandem-demo-moe)", () => {
  it("generates, with a quarter of its segment's experts in memory, the tokens it generates with all of them in its graph", async () => {
    // Layers [0, 3): 24 experts of 3 × 256 × 192 fp32 weights, 0.5625 MB each, 13.5 MB in all.
    const expected = await edgeOnlyTokens();
    expect(await edgeOnlyTokens(13.5 / 4)).toEqual(expected);
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
