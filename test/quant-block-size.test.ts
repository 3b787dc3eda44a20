/**
 * `quantBlockSize`, the values per quantization block of int8/int4 weights, as the edge
 * agent and the cloud worker take it: it reaches the graph each builds, and the default
 * leaves the graphs built before the setting existed where the cache has them.
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
  dir = mkdtempSync(join(tmpdir(), "tandem-block-size-"));
  model = join(dir, "model");
  await writeRandomCheckpoint(model, { ...TINY_LLAMA, seed: 11 });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("quantBlockSize", () => {
  it("keys a graph at the default block size as one that leaves it out, so cached graphs stay valid", async () => {
    const checkpoint = await loadCheckpoint(model);
    const path = (spec: Parameters<typeof segmentGraphPath>[1]) => segmentGraphPath(checkpoint, spec, dir);
    expect(path(edgeSegmentSpec(SPLIT, [], "int4", 32))).toBe(path(edgeSegmentSpec(SPLIT, [], "int4")));
    expect(path(cloudSegmentSpec(SPLIT, 4, "int8", 32))).toBe(path(cloudSegmentSpec(SPLIT, 4, "int8")));
    expect(path(edgeSegmentSpec(SPLIT, [], "int4", 64))).not.toBe(path(edgeSegmentSpec(SPLIT, [], "int4")));
    expect(edgeSegmentSpec(SPLIT, [], "int4", 64).quantBlockSize).toBe(64);
    expect(cloudSegmentSpec(SPLIT, 4, "int4", 128).quantBlockSize).toBe(128);
  });

  it("builds the worker's and the edge's graphs at the configured block size", async () => {
    const checkpoint = await loadCheckpoint(model);
    const layers = checkpoint.config.numLayers;
    const cacheDir = join(dir, "graphs");
    const worker = await startCloudWorker(
      { modelDir: model, split: SPLIT, workerId: "w", cacheDir, weightFormat: "int4", quantBlockSize: 64 },
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
      }),
      pino({ level: "silent" }),
      { cacheDir },
    );
    await edge.close();

    const built = (spec: Parameters<typeof segmentGraphPath>[1]) =>
      existsSync(segmentGraphPath(checkpoint, spec, cacheDir));
    expect(built(cloudSegmentSpec(SPLIT, layers, "int4", 64))).toBe(true);
    expect(built(cloudSegmentSpec(SPLIT, layers, "int4"))).toBe(false);
    const exits = [{ afterLayer: SPLIT }];
    expect(built(edgeSegmentSpec(SPLIT, exits, "int4", 64))).toBe(true);
    expect(built(edgeSegmentSpec(SPLIT, exits, "int4"))).toBe(false);
  });
});
