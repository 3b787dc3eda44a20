/**
 * Where a segment's KV cache lives: slots with room for more positions than they hold.
 *
 * A slot is one [rows, kvHeads, capacity, headDim] tensor per layer, for keys and for
 * values; row r holds its session's first `length` positions and zeros or stale values
 * after them. A run reads the slot as its past and hands back only the keys and values of
 * the positions it added, which are appended in place (appendKv). Before slots, each
 * decode step got every layer's whole cache back as a new buffer (several MB a step at
 * 110M parameters, growing with the context) for V8 to allocate, copy and collect, which
 * on two cores took CPU from the model's own threads.
 *
 * Slots are held by KV pools (kv-pool.ts), one row per session. A slot grows — a copy —
 * only when a forward would pass its capacity, to whole blocks of KV_BLOCK_POSITIONS: at
 * most one block of room is kept, and a decode pays one copy of its cache per block. A
 * truncation that leaves a slot more than a block larger than its positions need copies
 * them into a smaller one (shrinkKvCapacity), so a session cut back from a long context
 * does not keep, and count, the room it left.
 */
import type { LayerKv } from "./segment-model.ts";

/** Positions a slot grows by: a slot's capacity is a whole number of blocks (or the model's limit). */
export const KV_BLOCK_POSITIONS = 64;

/** Dimensions of a segment's cache: layers it holds, KV heads per layer and head width. */
export interface KvShape {
  layers: number;
  kvHeads: number;
  headDim: number;
}

export interface KvSlot {
  rows: number;
  /** Positions each row has room for. */
  capacity: number;
  /** Per segment layer, [rows, kvHeads, capacity, headDim] each. */
  layers: LayerKv[];
}

/**
 * Capacity of a slot that must hold `needed` positions: whole blocks, but never beyond
 * `limit`, the model's maxPositions (the graph's rotary tables hold that many positions).
 */
export function kvCapacity(needed: number, limit: number): number {
  const blocks = Math.max(1, Math.ceil(needed / KV_BLOCK_POSITIONS));
  return Math.min(limit, blocks * KV_BLOCK_POSITIONS);
}

/**
 * The capacity a slot should shrink to once its longest row holds `longest` positions, or
 * undefined to keep it: it shrinks only when it has more than a block of room beyond what
 * kvCapacity would give it now, so a truncation of a few positions (a resent frame) near a
 * block boundary costs no copy, and a long context cut short gives its memory back.
 */
export function shrinkKvCapacity(capacity: number, longest: number, limit: number): number | undefined {
  const fitted = kvCapacity(longest + 1, limit);
  return capacity > fitted + KV_BLOCK_POSITIONS ? fitted : undefined;
}

/** A zero-filled slot. */
export function allocateKvSlot(shape: KvShape, rows: number, capacity: number): KvSlot {
  const size = rows * shape.kvHeads * capacity * shape.headDim;
  return {
    rows,
    capacity,
    layers: Array.from({ length: shape.layers }, () => ({
      key: new Float32Array(size),
      value: new Float32Array(size),
    })),
  };
}

/** Copies the first `length` positions of row `fromRow` of `from` into row `toRow` of `to`, every layer. */
export function copyKvRow(
  from: KvSlot,
  fromRow: number,
  to: KvSlot,
  toRow: number,
  length: number,
  shape: KvShape,
): void {
  const { kvHeads, headDim } = shape;
  const span = length * headDim;
  for (let layer = 0; layer < shape.layers; layer++) {
    for (const kind of ["key", "value"] as const) {
      const src = from.layers[layer][kind];
      const dst = to.layers[layer][kind];
      for (let head = 0; head < kvHeads; head++) {
        const srcStart = (fromRow * kvHeads + head) * from.capacity * headDim;
        const dstStart = (toRow * kvHeads + head) * to.capacity * headDim;
        dst.set(src.subarray(srcStart, srcStart + span), dstStart);
      }
    }
  }
}

/**
 * Writes one layer's new positions, [rows, kvHeads, seq, headDim] keys and values as a
 * run returns them, into each row of the slot right after its pastLengths[row] positions.
 * It does not check pastLengths (SegmentModel.run does, before the run): a NaN offset
 * would write at position 0 and a negative one into the previous head.
 */
export function appendKv(
  slot: KvSlot,
  layer: number,
  newKey: Float32Array,
  newValue: Float32Array,
  pastLengths: number[],
  seq: number,
  kvHeads: number,
  headDim: number,
): void {
  const span = seq * headDim;
  const { key, value } = slot.layers[layer];
  for (let row = 0; row < slot.rows; row++) {
    for (let head = 0; head < kvHeads; head++) {
      const from = (row * kvHeads + head) * span;
      const to = ((row * kvHeads + head) * slot.capacity + pastLengths[row]) * headDim;
      key.set(newKey.subarray(from, from + span), to);
      value.set(newValue.subarray(from, from + span), to);
    }
  }
}

/** Bytes of memory one row of a slot takes. */
export function kvRowBytes(slot: KvSlot, shape: KvShape): number {
  return shape.layers * 2 * shape.kvHeads * slot.capacity * shape.headDim * Float32Array.BYTES_PER_ELEMENT;
}

/** Bytes of memory the whole slot takes, every row. */
export function kvSlotBytes(slot: KvSlot, shape: KvShape): number {
  return slot.rows * kvRowBytes(slot, shape);
}
