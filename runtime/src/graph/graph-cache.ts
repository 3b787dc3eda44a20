/**
 * Built segment graphs on disk, keyed by the weights hash and the segment spec, so a
 * program builds a graph once per checkpoint and split and later starts in milliseconds.
 * Layout: <cacheDir>/<key>/segment.onnx + segment.weights (the external data file), and
 * embedding.json where the segment starts at layer 0 (where its table is in the weights).
 */
import { createHash, randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, rename, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { GraphIoError, TandemError, type ProgressListener } from "@tandem/common";
import { cacheRoot } from "../cache-root.ts";
import type { Checkpoint } from "../checkpoint/model-weights.ts";
import { EMBEDDING_LAYOUT_FILE } from "./embedding-table-layout.ts";
import type { BuiltGraph, ExternalDataSink } from "./onnx-graph-builder.ts";
import {
  DEFAULT_QUANT_BLOCK_SIZE,
  defaultInt4HeadBits,
  headBits,
  SEGMENT_GRAPH_VERSION,
  type SegmentSpec,
  type WeightFormat,
} from "./segment-spec.ts";

export const SEGMENT_MODEL_FILE = "segment.onnx";
export const SEGMENT_WEIGHTS_FILE = "segment.weights";

/** @default the cache root's graphs/: $TANDEM_CACHE_DIR/graphs, else ~/.cache/tandem/graphs */
export function defaultGraphCacheDir(): string {
  return join(cacheRoot(), "graphs");
}

/**
 * A stable key: builder version, weights, and every field of the spec (exit maps by
 * content hash); for a segment with exits, the exit adapters' hash too (a segment without
 * exits runs none, so the same graph serves a checkpoint with or without them). A block
 * size named at its default is the graph of a spec that leaves it out, and keeps that
 * spec's key (the key graphs had before the programs took the setting).
 */
export function segmentCacheKey(weightsHash: string, spec: SegmentSpec, exitAdaptersHash?: string): string {
  const hash = createHash("sha256");
  hash.update(`tandem-segment-v${SEGMENT_GRAPH_VERSION}\n${weightsHash}\n`);
  if (exitAdaptersHash && spec.exits.length > 0) hash.update(`exit adapters ${exitAdaptersHash}\n`);
  // A setting at its default keys as if left out, and int4's head bits only in int4: one
  // graph, one key, however a caller spells its spec.
  const { exits, quantBlockSize, int4HeadBits, ...rest } = spec;
  const keyed = {
    ...rest,
    ...(quantBlockSize === DEFAULT_QUANT_BLOCK_SIZE ? {} : { quantBlockSize }),
    ...(spec.weightFormat === "int4" && headBits(spec) !== defaultInt4HeadBits(spec) ? { int4HeadBits } : {}),
  };
  hash.update(JSON.stringify(keyed, Object.keys(keyed).sort()));
  for (const exit of [...exits].sort((a, b) => a.afterLayer - b.afterLayer)) {
    hash.update(`\nexit ${exit.afterLayer}`);
    if (exit.linearMap) {
      hash.update(
        Buffer.from(
          exit.linearMap.weight.buffer,
          exit.linearMap.weight.byteOffset,
          exit.linearMap.weight.byteLength,
        ),
      );
      hash.update(
        Buffer.from(
          exit.linearMap.bias.buffer,
          exit.linearMap.bias.byteOffset,
          exit.linearMap.bias.byteLength,
        ),
      );
    }
  }
  return hash.digest("hex").slice(0, 32);
}

/** Where the segment's .onnx file is, or will be once built, in the cache. */
export function segmentGraphPath(
  checkpoint: Checkpoint,
  spec: SegmentSpec,
  cacheDir = defaultGraphCacheDir(),
): string {
  return join(
    cacheDir,
    segmentCacheKey(checkpoint.weightsHash, spec, checkpoint.exitAdaptersHash),
    SEGMENT_MODEL_FILE,
  );
}

/**
 * Returns the path of the segment's .onnx file, building and writing it when not cached;
 * a build reports its progress, layer by layer, to `onProgress`.
 */
export async function ensureSegmentGraph(
  checkpoint: Checkpoint,
  spec: SegmentSpec,
  cacheDir = defaultGraphCacheDir(),
  onProgress?: ProgressListener,
): Promise<string> {
  const modelPath = segmentGraphPath(checkpoint, spec, cacheDir);
  const dir = dirname(modelPath);
  if (existsSync(modelPath)) return modelPath;

  // The writer (and protobufjs under it) loads only when a graph must be built.
  const { buildSegmentGraph } = await import("./segment-graph.ts");
  await buildIntoCache(dir, async (staging, weights) => {
    const graph = buildSegmentGraph(checkpoint.config, checkpoint.weights, spec, weights, onProgress);
    if (graph.embedding)
      await writeFile(join(staging, EMBEDDING_LAYOUT_FILE), JSON.stringify(graph.embedding, null, 2));
    return graph;
  });
  return modelPath;
}

/** What identifies an expert graph: one expert of one layer of these weights, in a format. */
export interface ExpertGraphKey {
  layer: number;
  expert: number;
  weightFormat: WeightFormat;
  /** @default DEFAULT_QUANT_BLOCK_SIZE */
  quantBlockSize?: number;
}

/** Where an expert's .onnx file is, or will be once built, in the cache. */
export function expertGraphPath(
  weightsHash: string,
  key: ExpertGraphKey,
  cacheDir = defaultGraphCacheDir(),
): string {
  const block = key.quantBlockSize ?? DEFAULT_QUANT_BLOCK_SIZE;
  const digest = createHash("sha256")
    .update(`tandem-expert-v${SEGMENT_GRAPH_VERSION}\n${weightsHash}\n`)
    .update(`${key.layer} ${key.expert} ${key.weightFormat} ${block}`)
    .digest("hex")
    .slice(0, 32);
  return join(cacheDir, digest, SEGMENT_MODEL_FILE);
}

/**
 * The path of one expert's graph (host-routed MoE), built when not cached: it reads that
 * expert's three tensors and nothing else of the checkpoint.
 */
export async function ensureExpertGraph(
  checkpoint: Checkpoint,
  key: ExpertGraphKey,
  cacheDir = defaultGraphCacheDir(),
): Promise<string> {
  const modelPath = expertGraphPath(checkpoint.weightsHash, key, cacheDir);
  if (existsSync(modelPath)) return modelPath;
  const { buildExpertGraph } = await import("./segment-graph.ts");
  await buildIntoCache(dirname(modelPath), async (_staging, weights) =>
    buildExpertGraph(
      checkpoint.config,
      checkpoint.weights,
      key.layer,
      key.expert,
      key.weightFormat,
      key.quantBlockSize,
      weights,
    ),
  );
  return modelPath;
}

/**
 * Builds a graph into a private directory and renames it to `dir`: a concurrent builder of
 * the same key, or a crash half-way, never leaves a half-written graph under the key. The
 * weights stream into its external data file as `build` writes them, one tensor at a time.
 */
async function buildIntoCache(
  dir: string,
  build: (staging: string, weights: ExternalDataSink) => Promise<BuiltGraph>,
): Promise<void> {
  const { ExternalDataFile } = await import("./onnx-graph-builder.ts");
  // Unique per call: two loads of one graph in a process may build at the same moment.
  const staging = `${dir}.tmp-${process.pid}-${randomUUID()}`;
  try {
    await mkdir(staging, { recursive: true });
    const weights = new ExternalDataFile(join(staging, SEGMENT_WEIGHTS_FILE), SEGMENT_WEIGHTS_FILE);
    let graph: BuiltGraph;
    try {
      graph = await build(staging, weights);
    } finally {
      weights.close();
    }
    await writeFile(join(staging, SEGMENT_MODEL_FILE), graph.model);
    await rename(staging, dir).catch(async (error: NodeJS.ErrnoException) => {
      // Another process won the race: its graph is identical, keep it.
      if (error.code !== "ENOTEMPTY" && error.code !== "EEXIST") throw error;
      await rm(staging, { recursive: true, force: true });
    });
  } catch (error) {
    // Best effort: a staging path that could not be made cannot be removed either.
    await rm(staging, { recursive: true, force: true }).catch(() => undefined);
    // A spec or weight the builder refused keeps its own error; anything else is the disk.
    if (error instanceof TandemError) throw error;
    throw new GraphIoError(dir, `cannot write the graph (${(error as Error).message})`, {
      cause: error,
    });
  }
}
