import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import protobuf from "protobufjs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadCheckpoint } from "../checkpoint/load-checkpoint.ts";
import type { Checkpoint } from "../checkpoint/model-weights.ts";
import {
  ODD_HIDDEN,
  TINY_LLAMA,
  TINY_MIXTRAL,
  TINY_QWEN2,
  TINY_TIED,
  writeRandomCheckpoint,
  writeRandomExitAdapters,
  type RandomCheckpointSpec,
} from "../testing/random-checkpoint.ts";
import { cloudSegmentSpec, edgeSegmentSpec } from "./deployment-specs.ts";
import { ONNX_SCHEMA } from "./onnx/generated/onnx-schema.ts";
import type { EmbeddingTableLayout } from "./embedding-table-layout.ts";
import { InMemoryExternalData } from "./onnx-graph-builder.ts";
import { buildSegmentGraph } from "./segment-graph.ts";
import {
  attendingAdapterLayers,
  segmentSpec,
  WEIGHT_FORMATS,
  type SegmentSpec,
  type WeightFormat,
} from "./segment-spec.ts";
import {
  headWeightBytes,
  kvBytesPerPosition,
  linearWeightBytes,
  nbitsWeightBytes,
  segmentWeightBytes,
} from "./segment-weight-bytes.ts";

const modelProto = protobuf.Root.fromJSON(ONNX_SCHEMA as protobuf.INamespace).lookupType("onnx.ModelProto");

interface DecodedInitializer {
  name: string;
  rawData?: Uint8Array;
  externalData?: { key: string; value: string }[];
}

/**
 * A segment's graph as the engine builds it, decoded: its initializers and its nodes, and
 * where its embedding table is in the weights (from layer 0).
 */
function builtGraph(checkpoint: Checkpoint, spec: SegmentSpec): DecodedGraph {
  const built = buildSegmentGraph(
    checkpoint.config,
    checkpoint.weights,
    spec,
    new InMemoryExternalData("w.bin"),
  );
  const decoded = modelProto.toObject(modelProto.decode(built.model), { bytes: Uint8Array }) as {
    graph: Omit<DecodedGraph, "embedding">;
  };
  return { ...decoded.graph, embedding: built.embedding };
}

interface DecodedGraph {
  initializer: DecodedInitializer[];
  node: { input?: string[] }[];
  embedding?: EmbeddingTableLayout;
}

/** Where each external initializer's bytes start in the weights file. */
function externalOffsets(graph: DecodedGraph): Set<number> {
  const offsets = graph.initializer.flatMap((tensor) =>
    (tensor.externalData ?? []).filter((entry) => entry.key === "offset").map((entry) => Number(entry.value)),
  );
  return new Set(offsets);
}

/** The embedding table's bytes that no initializer holds: what the engine reads on demand. */
function tableBytesReadOnDemand(graph: DecodedGraph): number {
  if (!graph.embedding) return 0;
  const held = externalOffsets(graph);
  const { values, scales } = graph.embedding;
  return [values, ...(scales ? [scales] : [])]
    .filter((region) => !held.has(region.offset))
    .reduce((sum, region) => sum + region.length, 0);
}

/**
 * The bytes of a built graph's weights: each external tensor's recorded length (not the
 * file size, which has alignment padding) plus inline raw data, and the embedding table
 * where no initializer holds it. The builder's int64/float constants are left out, as
 * segmentWeightBytes leaves them out.
 */
function graphWeightBytes(graph: DecodedGraph): number {
  let bytes = tableBytesReadOnDemand(graph);
  for (const tensor of graph.initializer) {
    if (/^\/constants\/(int64|float|uint8)_/.test(tensor.name)) continue;
    const length = tensor.externalData?.find((entry) => entry.key === "length");
    bytes += length ? Number(length.value) : (tensor.rawData?.length ?? 0);
  }
  return bytes;
}

/** Qwen3: per-head q/k norms, head_dim 32 with 4 heads over hidden 64 (heads × head_dim ≠ hidden). */
const TINY_QWEN3: RandomCheckpointSpec = { ...TINY_LLAMA, architecture: "qwen3", headDim: 32, seed: 21 };

/** A calibrated exit's map: only its size matters here. */
const linearMap = (hidden: number) => ({
  weight: new Float32Array(hidden * hidden),
  bias: new Float32Array(hidden),
});

/** The segments each model is built as, for a format: the deployment's and a few more. */
function specsOf(spec: RandomCheckpointSpec, format: WeightFormat): [string, SegmentSpec][] {
  const layers = spec.numLayers;
  const split = Math.max(1, Math.floor(layers / 2));
  const exits = split > 1 ? [{ afterLayer: 1 }, { afterLayer: split }] : [{ afterLayer: split }];
  return [
    ["edge with its exits", edgeSegmentSpec(split, exits, format)],
    [
      "edge with a calibrated exit map",
      edgeSegmentSpec(split, [{ afterLayer: split, linearMap: linearMap(spec.hiddenSize) }], format),
    ],
    ["worker with the final head", cloudSegmentSpec(split, layers, format)],
    ["whole model", segmentSpec({ fromLayer: 0, toLayer: layers, finalHead: true, weightFormat: format })],
    [
      "whole model, blocks of 16",
      segmentSpec({
        fromLayer: 0,
        toLayer: layers,
        finalHead: true,
        weightFormat: format,
        quantBlockSize: 16,
      }),
    ],
    ["edge with its exits, an 8-bit int4 head", edgeSegmentSpec(split, exits, format, { int4HeadBits: 8 })],
    ["worker, a 4-bit int4 head", cloudSegmentSpec(split, layers, format, { int4HeadBits: 4 })],
    [
      "middle layers, no head",
      segmentSpec({ fromLayer: 1, toLayer: layers, outputHidden: true, weightFormat: format }),
    ],
  ];
}

const MODELS: Record<string, RandomCheckpointSpec> = {
  TINY_LLAMA,
  TINY_QWEN2,
  TINY_TIED,
  TINY_MIXTRAL,
  ODD_HIDDEN,
  TINY_QWEN3,
};

let workDir: string;
const checkpoints = new Map<string, Checkpoint>();

beforeAll(async () => {
  workDir = mkdtempSync(join(tmpdir(), "tandem-weight-bytes-"));
  for (const [name, spec] of Object.entries(MODELS)) {
    await writeRandomCheckpoint(join(workDir, name), spec);
    checkpoints.set(name, await loadCheckpoint(join(workDir, name)));
  }
});
afterAll(() => rmSync(workDir, { recursive: true, force: true }));

describe("segmentWeightBytes", () => {
  for (const [name, spec] of Object.entries(MODELS)) {
    for (const format of WEIGHT_FORMATS) {
      it(`equals the weight initializers of the built graph: ${name}, ${format}`, () => {
        const checkpoint = checkpoints.get(name)!;
        for (const [segment, segmentSpec] of specsOf(spec, format)) {
          const bytes = segmentWeightBytes(checkpoint.config, segmentSpec);
          const graph = builtGraph(checkpoint, segmentSpec);
          expect({ segment, total: bytes.total, readOnDemand: bytes.readOnDemand }).toEqual({
            segment,
            total: graphWeightBytes(graph),
            readOnDemand: tableBytesReadOnDemand(graph),
          });
        }
      });
    }
  }

  it("every initializer a graph holds is read by one of its nodes (none is written for nothing)", () => {
    for (const [name, spec] of Object.entries(MODELS)) {
      const checkpoint = checkpoints.get(name)!;
      for (const format of WEIGHT_FORMATS) {
        for (const [segment, segmentSpec] of specsOf(spec, format)) {
          const graph = builtGraph(checkpoint, segmentSpec);
          const read = new Set(graph.node.flatMap((node) => node.input ?? []));
          const unread = graph.initializer.map((tensor) => tensor.name).filter((n) => !read.has(n));
          expect({ model: name, format, segment, unread }).toEqual({
            model: name,
            format,
            segment,
            unread: [],
          });
        }
      }
    }
  });

  // Widths 24 (its own w8a8 rotation) and 112 (the layers' intermediate: rotation shared);
  // the exit after 2 attending, or not.
  for (const [width, attending] of [
    [24, []],
    [112, []],
    [24, [2]],
  ] as const)
    it(`counts exit adapters of width ${width}${attending.length ? " (one attending)" : ""} as the built graph holds them, in every format`, async () => {
      const dir = join(workDir, `adapters-${width}-${attending.join("-")}`);
      await writeRandomCheckpoint(dir, TINY_LLAMA);
      await writeRandomExitAdapters(dir, TINY_LLAMA, { layers: [1, 2], width, attending, seed: 3 });
      const checkpoint = await loadCheckpoint(dir);
      const widths = new Map(
        [...checkpoint.weights.exitAdapters!].map(([layer, a]) => [layer, a.gateProj.shape[0]]),
      );
      const attendingSet = attendingAdapterLayers(checkpoint.weights.exitAdapters);
      expect([...attendingSet]).toEqual(attending);
      for (const format of WEIGHT_FORMATS)
        for (const [segment, spec] of [
          ["edge with both exits", edgeSegmentSpec(2, [{ afterLayer: 1 }, { afterLayer: 2 }], format)],
          [
            "edge with a map at one exit",
            edgeSegmentSpec(2, [{ afterLayer: 1 }, { afterLayer: 2, linearMap: linearMap(64) }], format),
          ],
          [
            "one layer and its exit",
            segmentSpec({ fromLayer: 1, toLayer: 2, exits: [{ afterLayer: 2 }], weightFormat: format }),
          ],
        ] as const) {
          const bytes = segmentWeightBytes(checkpoint.config, spec, widths, attendingSet);
          expect(bytes.exitAdapters, `${format}, ${segment}`).toBeGreaterThan(0);
          expect({ format, segment, total: bytes.total }).toEqual({
            format,
            segment,
            total: graphWeightBytes(builtGraph(checkpoint, spec)),
          });
        }
    });

  it("splits the bytes into embedding, rotary, layers, head and exit maps", () => {
    const config = checkpoints.get("TINY_LLAMA")!.config;
    const h = 64;
    const bytes = segmentWeightBytes(
      config,
      edgeSegmentSpec(2, [{ afterLayer: 1, linearMap: linearMap(h) }, { afterLayer: 2 }], "fp32"),
    );
    expect(bytes).toEqual({
      embedding: 300 * h * 4,
      rotary: 2 * 2048 * 8 * 4,
      // Two norms, q/k/v (64 + 2·32 rows), o_proj, gate/up and down (intermediate 112).
      layers: 2 * 4 * (2 * h + (64 + 2 * 32) * h + h * 64 + 2 * 112 * h + h * 112),
      // Untied: the final norm and the LM head, once for both exits.
      head: 4 * (h + 300 * h),
      exitMaps: 4 * (h * h + h + h),
      exitAdapters: 0,
      total: bytes.embedding + bytes.rotary + bytes.layers + bytes.head + bytes.exitMaps,
      // No head multiplies by the table: its rows are read as tokens need them.
      readOnDemand: bytes.embedding,
    });
  });

  it("keeps the table in 8 bits for quantized weights; a tied head shares it where the formats agree", () => {
    const config = checkpoints.get("TINY_TIED")!.config;
    const edge = (format: WeightFormat) =>
      segmentWeightBytes(config, edgeSegmentSpec(2, [{ afterLayer: 2 }], format));
    // 300 rows of 2 blocks of 32: a byte per value and each block's scale.
    const table8 = 300 * 2 * (32 + 4);
    expect([edge("fp32").embedding, edge("int8").embedding, edge("int4").embedding]).toEqual([
      300 * 64 * 4,
      table8,
      table8,
    ]);
    // Beside the final norm's 64 floats, the head is the table itself in fp32, int8 and
    // w8a8 (which the process then holds); the edge's int4 head, 4-bit by default where no
    // final head reads it, is a copy, and the 8-bit table is read on demand.
    expect(edge("fp32").head).toBe(64 * 4);
    expect(edge("int8").head).toBe(64 * 4);
    expect(edge("w8a8").head).toBe(64 * 4);
    expect(edge("int4").head).toBe(64 * 4 + nbitsWeightBytes(300, 64, 4, 32));
    expect(WEIGHT_FORMATS.map((format) => edge(format).readOnDemand)).toEqual([0, 0, 0, table8]);
    // An 8-bit int4 head shares the table like int8's.
    const eightBitHead = segmentWeightBytes(
      config,
      edgeSegmentSpec(2, [{ afterLayer: 2 }], "int4", { int4HeadBits: 8 }),
    );
    expect(eightBitHead.head).toBe(64 * 4);
    expect(eightBitHead.readOnDemand).toBe(0);
    // The worker has no table to share: its head is a copy in every format.
    expect(segmentWeightBytes(config, cloudSegmentSpec(2, 4, "fp32")).head).toBe(64 * 4 + 300 * 64 * 4);
    expect(segmentWeightBytes(config, cloudSegmentSpec(2, 4, "int8")).head).toBe(64 * 4 + table8);
    expect(segmentWeightBytes(config, cloudSegmentSpec(2, 4, "w8a8")).head).toBe(64 * 4 + table8);
    // int4's final head is 8-bit by default.
    expect(segmentWeightBytes(config, cloudSegmentSpec(2, 4, "int4")).head).toBe(64 * 4 + table8);
  });
});

describe("linearWeightBytes", () => {
  it.each([
    ["fp32", 97, 4 * 97 * 10],
    // 97 columns: 4 blocks of 32, the last padded; 32 bytes (int8) or 16 (int4) per block plus a scale.
    ["int8", 97, 10 * 4 * (32 + 4)],
    ["int4", 97, 10 * 4 * (16 + 4)],
    // w8a8: a byte per value and a scale per row (output channel).
    ["w8a8", 97, 10 * 97 + 10 * 4],
    ["int4", 64, 10 * 2 * (16 + 4)],
  ] as const)("%s, 10 rows × %i columns: %i bytes", (format, cols, bytes) => {
    expect(linearWeightBytes(10, cols, format, 32)).toBe(bytes);
  });
});

describe("headWeightBytes", () => {
  it.each([
    ["fp32", 4 * 97 * 10],
    // The head keeps MatMulNBits's blocks: 4 blocks of 32 per row, the last padded.
    ["int8", 10 * 4 * (32 + 4)],
    ["w8a8", 10 * 4 * (32 + 4)],
    ["int4", 10 * 4 * (32 + 4)],
  ] as const)("%s with the final head, 10 rows × 97 columns: %i bytes", (format, bytes) => {
    expect(headWeightBytes(10, 97, { weightFormat: format, finalHead: true })).toBe(bytes);
  });

  it("is 4-bit blocks for an int4 head of exits only or of 4 bits asked for; other formats ignore the setting", () => {
    const fourBit = 10 * 4 * (16 + 4);
    expect(headWeightBytes(10, 97, { weightFormat: "int4", finalHead: false })).toBe(fourBit);
    expect(headWeightBytes(10, 97, { weightFormat: "int4", finalHead: true, int4HeadBits: 4 })).toBe(fourBit);
    expect(headWeightBytes(10, 97, { weightFormat: "int4", finalHead: false, int4HeadBits: 8 })).toBe(
      10 * 4 * (32 + 4),
    );
    expect(headWeightBytes(10, 97, { weightFormat: "int8", finalHead: true, int4HeadBits: 4 })).toBe(
      10 * 4 * (32 + 4),
    );
    expect(
      headWeightBytes(10, 97, { weightFormat: "int4", finalHead: true, int4HeadBits: 4, quantBlockSize: 64 }),
    ).toBe(10 * 2 * (32 + 4));
  });
});

describe("kvBytesPerPosition", () => {
  it("is a key and a value per layer and KV head, fp32", () => {
    expect(kvBytesPerPosition(checkpoints.get("TINY_LLAMA")!.config, 3)).toBe(2 * 3 * 2 * 16 * 4);
  });
});
