/**
 * The quantization settings the edge agent and the cloud worker take — `quantBlockSize`,
 * the values per block of int8/int4 weights, and `int4HeadBits`, the bits of an int4 LM
 * head: they reach the graph each builds, and a setting at its default keys the graph as
 * one that leaves it out, so every caller finds the same cached graph.
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startCloudWorker } from "@tandem/cloud-worker";
import { EDGE_CONFIG_SCHEMA, startEdgeAgent } from "@tandem/edge-agent";
import { cloudSegmentSpec, edgeSegmentSpec, loadCheckpoint, segmentGraphPath } from "@tandem/runtime";
import { TINY_LLAMA, writeRandomCheckpoint } from "@tandem/runtime/testing";

const SPLIT = 2;
let dir: string;
let model: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "tandem-quantization-"));
  model = join(dir, "model");
  await writeRandomCheckpoint(model, { ...TINY_LLAMA, seed: 11 });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("quantization settings", () => {
  it("key a graph at a default as one that leaves the setting out, so cached graphs stay valid", async () => {
    const checkpoint = await loadCheckpoint(model);
    const path = (spec: Parameters<typeof segmentGraphPath>[1]) => segmentGraphPath(checkpoint, spec, dir);
    const edgeInt4 = path(edgeSegmentSpec(SPLIT, [], "int4"));
    expect(path(edgeSegmentSpec(SPLIT, [], "int4", { quantBlockSize: 32 }))).toBe(edgeInt4);
    // The edge answers only with exits, whose head is 4-bit by default; the worker answers
    // with the model's final head, 8-bit by default.
    expect(path(edgeSegmentSpec(SPLIT, [], "int4", { int4HeadBits: 4 }))).toBe(edgeInt4);
    const workerInt4 = path(cloudSegmentSpec(SPLIT, 4, "int4"));
    expect(path(cloudSegmentSpec(SPLIT, 4, "int4", { int4HeadBits: 8 }))).toBe(workerInt4);
    expect(path(cloudSegmentSpec(SPLIT, 4, "int8", { quantBlockSize: 32 }))).toBe(
      path(cloudSegmentSpec(SPLIT, 4, "int8")),
    );
    expect(path(edgeSegmentSpec(SPLIT, [], "int4", { quantBlockSize: 64 }))).not.toBe(edgeInt4);
    expect(path(edgeSegmentSpec(SPLIT, [], "int4", { int4HeadBits: 8 }))).not.toBe(edgeInt4);
    expect(path(cloudSegmentSpec(SPLIT, 4, "int4", { int4HeadBits: 4 }))).not.toBe(workerInt4);
    // Only an int4 graph has a 4-bit head to ask for: int8's is the same graph either way.
    expect(path(cloudSegmentSpec(SPLIT, 4, "int8", { int4HeadBits: 4 }))).toBe(
      path(cloudSegmentSpec(SPLIT, 4, "int8")),
    );
    expect(edgeSegmentSpec(SPLIT, [], "int4", { quantBlockSize: 64 }).quantBlockSize).toBe(64);
    expect(cloudSegmentSpec(SPLIT, 4, "int4", { int4HeadBits: 4 }).int4HeadBits).toBe(4);
  });

  it("build the worker's and the edge's graphs as configured", async () => {
    const checkpoint = await loadCheckpoint(model);
    const layers = checkpoint.config.numLayers;
    const cacheDir = join(dir, "graphs");
    const worker = await startCloudWorker(
      {
        modelDir: model,
        split: SPLIT,
        workerId: "w",
        cacheDir,
        weightFormat: "int4",
        quantBlockSize: 64,
        int4HeadBits: 4,
      },
      pino({ level: "silent" }),
    );
    await worker.close(100);
    const edge = await startEdgeAgent(
      EDGE_CONFIG_SCHEMA.parse({
        model,
        split: SPLIT,
        exitLayers: [SPLIT],
        port: 0,
        httpAddress: "",
        weights: "int4",
        quantBlockSize: 64,
        int4HeadBits: 8,
      }),
      pino({ level: "silent" }),
      { cacheDir },
    );
    await edge.close();

    const built = (spec: Parameters<typeof segmentGraphPath>[1]) =>
      existsSync(segmentGraphPath(checkpoint, spec, cacheDir));
    expect(built(cloudSegmentSpec(SPLIT, layers, "int4", { quantBlockSize: 64, int4HeadBits: 4 }))).toBe(
      true,
    );
    expect(built(cloudSegmentSpec(SPLIT, layers, "int4", { quantBlockSize: 64 }))).toBe(false);
    expect(built(cloudSegmentSpec(SPLIT, layers, "int4"))).toBe(false);
    const exits = [{ afterLayer: SPLIT }];
    expect(built(edgeSegmentSpec(SPLIT, exits, "int4", { quantBlockSize: 64, int4HeadBits: 8 }))).toBe(true);
    expect(built(edgeSegmentSpec(SPLIT, exits, "int4", { quantBlockSize: 64 }))).toBe(false);
    expect(built(edgeSegmentSpec(SPLIT, exits, "int4"))).toBe(false);
  });

  it("refuse what MatMulNBits cannot run, naming the field", () => {
    const parse = (settings: object) =>
      EDGE_CONFIG_SCHEMA.safeParse({ model, split: SPLIT, weights: "int4", ...settings });
    expect(parse({ int4HeadBits: 4 }).success).toBe(true);
    const badBits = parse({ int4HeadBits: 2 });
    expect(badBits.success).toBe(false);
    expect(badBits.error?.issues[0].path).toEqual(["int4HeadBits"]);
    const badBlock = parse({ quantBlockSize: 48 });
    expect(badBlock.error?.issues[0].path).toEqual(["quantBlockSize"]);
  });
});
