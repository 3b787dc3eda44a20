/**
 * The weights hash identifies a checkpoint's weights: calibration files and the graph
 * cache are keyed by it, and an edge and a worker must agree on it. A process that finds
 * its graph in the cache reads nothing else of a multi-GB checkpoint, so the hash reads
 * little too — a few MB whatever the model's size:
 *
 *   sha256("tandem-weights-v2\n" ‖ config.json's bytes ‖ for each weight file in path order:
 *          its name and size ‖ its header (every tensor's name, dtype, shape and offsets) ‖
 *          for each tensor: its first and last SAMPLE_BYTES, and SAMPLE_BYTES every
 *          SAMPLE_STRIDE_BYTES between)
 *
 * What it detects: any change to config.json, a file's size, or any tensor's layout; any
 * rewrite of a tensor's values (a fine-tune, a merge, another quantization or seed
 * changes bytes in every sampled block). What it does not: an edit confined to bytes
 * between two samples of one tensor (e.g. a single weight changed by hand). Such an edit
 * needs a new graph cache (`rm -r` the cache directory) or a changed config.json.
 * generation_config.json is left out on purpose: its end tokens decide where the edge
 * stops a generation, not what either side computes.
 */
import { createHash } from "node:crypto";
import { basename } from "node:path";
import type { SafetensorsFile } from "./safetensors.ts";

/** Bytes read at each sampled place of a tensor. */
export const SAMPLE_BYTES = 4096;
/** Distance between samples inside a tensor: ~300 samples for a 2.5 GB checkpoint. */
export const SAMPLE_STRIDE_BYTES = 8 * 2 ** 20;

/** @param weightFiles every weight file of the checkpoint, in path order */
export function weightsHash(configBytes: Uint8Array, weightFiles: readonly SafetensorsFile[]): string {
  const hash = createHash("sha256").update("tandem-weights-v2\n").update(configBytes);
  for (const file of weightFiles) {
    hash.update(`\n${basename(file.path)}\0${file.size}\0`);
    hash.update(file.readBytes(0, file.dataStart));
    const tensors = [...file.entries.values()].sort((a, b) => a.begin - b.begin);
    for (const { begin, end } of tensors)
      for (const [from, to] of sampledRanges(begin, end))
        hash.update(file.readBytes(file.dataStart + from, file.dataStart + to));
  }
  return hash.digest("hex");
}

/** The byte ranges of [begin, end) the hash reads: all of a small tensor, samples of a large one. */
export function sampledRanges(begin: number, end: number): [number, number][] {
  if (end - begin <= 2 * SAMPLE_BYTES) return end > begin ? [[begin, end]] : [];
  const ranges: [number, number][] = [];
  for (let at = begin; at < end - SAMPLE_BYTES; at += SAMPLE_STRIDE_BYTES)
    ranges.push([at, at + SAMPLE_BYTES]);
  ranges.push([end - SAMPLE_BYTES, end]);
  return ranges;
}
