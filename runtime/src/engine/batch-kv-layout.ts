/**
 * The two layouts a segment's KV cache takes, and the copies between them.
 *
 *   - compact, per session: [kvHeads, length, headDim] per layer, exactly the positions the
 *     session has seen (what a single-session forward takes and returns, as one row);
 *   - padded, per batch: [rows, kvHeads, total, headDim] per layer, row r holding its
 *     session's first length positions and zeros after them (what the runtime takes and
 *     returns for a batched step, where sessions of different lengths share one tensor).
 *
 * Sessions keep compact caches while they run alone. A batched step needs the padded one,
 * built from the compact caches of its rows; the batch's KV then stays padded, where the
 * runtime put it, until one of its sessions runs alone, is truncated or joins another batch,
 * when every row is extracted back to compact. Copying every session's cache into and out of
 * a batch tensor at each step would cost as much memory traffic as the weights at long
 * contexts, so these copies happen only when a batch forms or breaks up.
 */
import type { LayerKv } from "./segment-model.ts";

/** Dimensions of a segment's cache: layers it holds, KV heads per layer and head width. */
export interface KvShape {
  layers: number;
  kvHeads: number;
  headDim: number;
}

/**
 * Copies compact caches (`caches[row][layer]`, `lengths[row]` positions each) into one
 * right-padded [rows, kvHeads, maxPast, headDim] tensor per layer; padding stays zero.
 */
export function paddedPast(caches: LayerKv[][], lengths: number[], shape: KvShape): LayerKv[] {
  const { layers, kvHeads, headDim } = shape;
  const maxPast = Math.max(...lengths);
  const rowStride = kvHeads * maxPast * headDim;
  const past: LayerKv[] = [];
  for (let layer = 0; layer < layers; layer++) {
    const key = new Float32Array(caches.length * rowStride);
    const value = new Float32Array(caches.length * rowStride);
    caches.forEach((cache, row) => {
      const offset = row * rowStride;
      copyKvRows(cache[layer].key, lengths[row], key, offset, maxPast, kvHeads, headDim);
      copyKvRows(cache[layer].value, lengths[row], value, offset, maxPast, kvHeads, headDim);
    });
    past.push({ key, value });
  }
  return past;
}

/** Copies a compact [heads, length, dim] cache into a padded [heads, paddedLength, dim] slot. */
function copyKvRows(
  src: Float32Array,
  length: number,
  dst: Float32Array,
  offset: number,
  paddedLength: number,
  heads: number,
  dim: number,
): void {
  for (let h = 0; h < heads; h++) {
    dst.set(src.subarray(h * length * dim, (h + 1) * length * dim), offset + h * paddedLength * dim);
  }
}

/** Takes the first `length` positions of one row of a padded [batch, heads, total, dim] tensor. */
export function extractKvRow(
  src: Float32Array,
  offset: number,
  total: number,
  length: number,
  heads: number,
  dim: number,
): Float32Array {
  const out = new Float32Array(heads * length * dim);
  for (let h = 0; h < heads; h++) {
    const from = offset + h * total * dim;
    out.set(src.subarray(from, from + length * dim), h * length * dim);
  }
  return out;
}

/** Stacks one [width] row per session into a [rows, width] batch input (a batched step's hidden states). */
export function concatRows(rows: Float32Array[], width: number): Float32Array {
  const out = new Float32Array(rows.length * width);
  rows.forEach((row, i) => out.set(row, i * width));
  return out;
}
