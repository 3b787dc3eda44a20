/**
 * A KV pool: a slot of several rows allocated up front, each row the cache of one session
 * for as long as the session lives (continuous batching with slotted KV).
 *
 * Sessions that step together are rows of the same tensors, so a batched step runs on the
 * rows where they are — a contiguous range of rows, passed to the runtime as views — and a
 * session joining or leaving the running batch copies no one's cache: it takes a free row,
 * or leaves one. A row between two that step is run too, on a dummy input whose keys land
 * past that row's length, where nothing reads them. A pool grows (a copy of its rows) only
 * when its longest row outgrows its capacity, in whole blocks of positions like a slot.
 *
 * Why rows and not pages: the graph's attention reads each batch row's past as one
 * contiguous [kvHeads, capacity, headDim] block (a MatMul operand), so a paged cache would
 * need a gather of every page into such blocks on every step — the copy this layout avoids. The
 * price is room: every row of a pool has the capacity of its longest.
 */
import { allocateKvSlot, copyKvRow, type KvShape, type KvSlot } from "./kv-slot.ts";

export class KvPool {
  slot: KvSlot;
  /** The session holding each row; undefined for a free row. */
  readonly members: (string | undefined)[];

  constructor(shape: KvShape, rows: number, capacity: number) {
    this.slot = allocateKvSlot(shape, rows, capacity);
    this.members = new Array<string | undefined>(rows).fill(undefined);
  }

  get rows(): number {
    return this.slot.rows;
  }

  get capacity(): number {
    return this.slot.capacity;
  }

  get occupied(): number {
    return this.members.filter((m) => m !== undefined).length;
  }

  /** The lowest free row (which keeps the rows a batch runs on few and contiguous), or undefined. */
  freeRow(): number | undefined {
    const row = this.members.indexOf(undefined);
    return row < 0 ? undefined : row;
  }

  /**
   * Replaces the slot by one of `capacity` positions a row, row r keeping its first
   * lengths[r] positions (a free row: 0).
   */
  resize(shape: KvShape, capacity: number, lengths: number[]): void {
    const resized = allocateKvSlot(shape, this.rows, capacity);
    lengths.forEach((length, row) => copyKvRow(this.slot, row, resized, row, length, shape));
    this.slot = resized;
  }
}

/**
 * Rows [first, first + count) of a slot as a slot of their own: views of the same memory,
 * so a run on them writes straight into the pool.
 */
export function kvSlotRows(slot: KvSlot, first: number, count: number): KvSlot {
  if (first === 0 && count === slot.rows) return slot;
  return {
    rows: count,
    capacity: slot.capacity,
    layers: slot.layers.map(({ key, value }) => {
      const rowSize = key.length / slot.rows;
      return {
        key: key.subarray(first * rowSize, (first + count) * rowSize),
        value: value.subarray(first * rowSize, (first + count) * rowSize),
      };
    }),
  };
}
