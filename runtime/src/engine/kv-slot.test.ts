/**
 * KV slots as a specification: capacities come in whole blocks within the model's limit,
 * and a cache survives a trip through a shared batch slot and back into a slot of another
 * capacity unchanged, leaving every position past its length alone.
 */
import { describe, expect, it } from "vitest";
import {
  allocateKvSlot,
  appendKv,
  copyKvRow,
  KV_BLOCK_POSITIONS,
  kvCapacity,
  type KvShape,
  type KvSlot,
  kvRowBytes,
  kvSlotBytes,
  shrinkKvCapacity,
} from "./kv-slot.ts";

const shape: KvShape = { layers: 2, kvHeads: 2, headDim: 3 };

/** A one-row slot whose first `length` positions hold distinct non-zero values (seeded by `session`). */
function filledSlot(session: number, length: number, capacity: number): KvSlot {
  const slot = allocateKvSlot(shape, 1, capacity);
  slot.layers.forEach((layer, l) =>
    (["key", "value"] as const).forEach((kind, k) => {
      for (let head = 0; head < shape.kvHeads; head++)
        for (let i = 0; i < length * shape.headDim; i++)
          layer[kind][head * capacity * shape.headDim + i] =
            1000 * session + 100 * l + 50 * k + 10 * head + i + 1;
    }),
  );
  return slot;
}

/** Row `row`'s values at `position` of one head, layer and kind. */
function at(
  slot: KvSlot,
  row: number,
  layer: number,
  kind: "key" | "value",
  head: number,
  position: number,
): number[] {
  const from = ((row * shape.kvHeads + head) * slot.capacity + position) * shape.headDim;
  return Array.from(slot.layers[layer][kind].subarray(from, from + shape.headDim));
}

describe("kvCapacity", () => {
  it("rounds up to whole blocks, at least one", () => {
    expect(kvCapacity(0, 4096)).toBe(KV_BLOCK_POSITIONS);
    expect(kvCapacity(1, 4096)).toBe(KV_BLOCK_POSITIONS);
    expect(kvCapacity(KV_BLOCK_POSITIONS, 4096)).toBe(KV_BLOCK_POSITIONS);
    expect(kvCapacity(KV_BLOCK_POSITIONS + 1, 4096)).toBe(2 * KV_BLOCK_POSITIONS);
  });

  it("never passes the model's limit", () => {
    expect(kvCapacity(20, 30)).toBe(30);
    expect(kvCapacity(4000, 4000)).toBe(4000);
  });
});

describe("shrinkKvCapacity", () => {
  const block = KV_BLOCK_POSITIONS;

  it("shrinks a slot left more than a block of room to the blocks its longest row needs, plus one position", () => {
    // 4000 positions cut to 10: one block.
    expect(shrinkKvCapacity(kvCapacity(4000, 4096), 10, 4096)).toBe(block);
    expect(shrinkKvCapacity(3 * block, block - 1, 4096)).toBe(block);
    // A whole block held: the next position needs a second one.
    expect(shrinkKvCapacity(4 * block, block, 4096)).toBe(2 * block);
  });

  it("keeps a slot with at most a block of room beyond what its rows need (a model's limit included)", () => {
    expect(shrinkKvCapacity(2 * block, block - 1, 4096)).toBeUndefined();
    expect(shrinkKvCapacity(2 * block, 0, 4096)).toBeUndefined();
    expect(shrinkKvCapacity(5 * block, 3 * block, 4096)).toBeUndefined();
    expect(shrinkKvCapacity(70, 69, 70)).toBeUndefined();
    expect(shrinkKvCapacity(70, 3, 70)).toBeUndefined();
  });
});

describe("a slot", () => {
  it("has one [rows, kvHeads, capacity, headDim] tensor per layer, for keys and for values, all zero", () => {
    const slot = allocateKvSlot(shape, 3, 5);
    expect(slot.layers).toHaveLength(shape.layers);
    for (const layer of slot.layers)
      for (const tensor of [layer.key, layer.value]) {
        expect(tensor).toHaveLength(3 * shape.kvHeads * 5 * shape.headDim);
        expect(tensor.every((v) => v === 0)).toBe(true);
      }
  });

  it("takes the bytes its arrays hold: kvSlotBytes all of them, kvRowBytes each row's share", () => {
    const slot = allocateKvSlot(shape, 3, 5);
    const held = slot.layers.reduce((sum, layer) => sum + layer.key.byteLength + layer.value.byteLength, 0);
    // 2 layers × (key + value) × 3 rows × 2 heads × 5 positions × 3 dims × 4 bytes.
    expect(held).toBe(1440);
    expect(kvSlotBytes(slot, shape)).toBe(held);
    expect(kvRowBytes(slot, shape)).toBe(held / 3);
  });
});

describe("copyKvRow", () => {
  // Sessions of different lengths, one of them empty, each in a slot of its own capacity.
  const lengths = [3, 1, 0, 2];
  const own = lengths.map((length, session) => filledSlot(session, length, length + 1 + session));
  const batch = allocateKvSlot(shape, lengths.length, 7);
  lengths.forEach((length, row) => copyKvRow(own[row], 0, batch, row, length, shape));

  it("puts each session's positions in its row of a batch slot, and leaves the rest zero", () => {
    lengths.forEach((length, row) => {
      for (let layer = 0; layer < shape.layers; layer++)
        for (const kind of ["key", "value"] as const)
          for (let head = 0; head < shape.kvHeads; head++)
            for (let position = 0; position < batch.capacity; position++) {
              const got = at(batch, row, layer, kind, head, position);
              if (position < length) expect(got).toEqual(at(own[row], 0, layer, kind, head, position));
              else expect(got).toEqual(new Array(shape.headDim).fill(0));
            }
    });
  });

  it("gives each session its positions back exactly, into a slot of another capacity", () => {
    lengths.forEach((length, row) => {
      const back = allocateKvSlot(shape, 1, length + 9);
      copyKvRow(batch, row, back, 0, length, shape);
      for (let layer = 0; layer < shape.layers; layer++)
        for (const kind of ["key", "value"] as const)
          for (let head = 0; head < shape.kvHeads; head++)
            for (let position = 0; position < length; position++)
              expect(at(back, 0, layer, kind, head, position)).toEqual(
                at(own[row], 0, layer, kind, head, position),
              );
    });
  });
});

describe("appendKv", () => {
  it("writes each row's new positions right after the positions it holds, and nothing else", () => {
    const pastLengths = [2, 0, 4];
    const seq = 2;
    const slot = allocateKvSlot(shape, pastLengths.length, 7);
    const size = pastLengths.length * shape.kvHeads * seq * shape.headDim;
    const newKey = Float32Array.from({ length: size }, (_, i) => i + 1);
    const newValue = Float32Array.from({ length: size }, (_, i) => -(i + 1));
    appendKv(slot, 1, newKey, newValue, pastLengths, seq, shape.kvHeads, shape.headDim);
    pastLengths.forEach((past, row) => {
      for (let head = 0; head < shape.kvHeads; head++)
        for (let position = 0; position < slot.capacity; position++) {
          const step = position - past;
          const from = ((row * shape.kvHeads + head) * seq + step) * shape.headDim;
          const added = step >= 0 && step < seq;
          expect(at(slot, row, 1, "key", head, position)).toEqual(
            added ? Array.from(newKey.subarray(from, from + shape.headDim)) : [0, 0, 0],
          );
          expect(at(slot, row, 1, "value", head, position)).toEqual(
            added ? Array.from(newValue.subarray(from, from + shape.headDim)) : [0, 0, 0],
          );
          expect(at(slot, row, 0, "key", head, position)).toEqual([0, 0, 0]);
        }
    });
  });
});
