/**
 * The batch KV layouts as a specification: compact caches survive a trip through a padded
 * batch unchanged, whatever their lengths, and a padded batch holds zeros past each row's
 * length.
 */
import { describe, expect, it } from "vitest";
import { concatRows, extractKvRow, type KvShape, paddedPast } from "./batch-kv-layout.ts";
import type { LayerKv } from "./segment-model.ts";

const shape: KvShape = { layers: 2, kvHeads: 2, headDim: 3 };

/** A compact [kvHeads, length, headDim] tensor whose every value is distinct and non-zero. */
function compact(seed: number, length: number): Float32Array {
  return Float32Array.from({ length: shape.kvHeads * length * shape.headDim }, (_, i) => seed + i + 1);
}

/** One session's compact cache: keys and values of every layer, all different. */
function cache(session: number, length: number): LayerKv[] {
  return Array.from({ length: shape.layers }, (_, layer) => ({
    key: compact(1000 * session + 100 * layer, length),
    value: compact(1000 * session + 100 * layer + 50, length),
  }));
}

describe("padded batch of compact caches", () => {
  // Rows of different lengths, one of them empty.
  const lengths = [3, 1, 0, 2];
  const caches = lengths.map((length, session) => cache(session, length));
  const total = Math.max(...lengths);
  const rowStride = shape.kvHeads * total * shape.headDim;
  const past = paddedPast(caches, lengths, shape);

  it("has one [rows, kvHeads, longest length, headDim] tensor per layer, for keys and for values", () => {
    expect(past).toHaveLength(shape.layers);
    for (const layer of past) {
      expect(layer.key).toHaveLength(lengths.length * rowStride);
      expect(layer.value).toHaveLength(lengths.length * rowStride);
    }
  });

  it("gives back each row's compact cache exactly when its first length positions are extracted", () => {
    lengths.forEach((length, row) => {
      past.forEach((layer, l) => {
        const { kvHeads, headDim } = shape;
        expect(extractKvRow(layer.key, row * rowStride, total, length, kvHeads, headDim)).toEqual(
          caches[row][l].key,
        );
        expect(extractKvRow(layer.value, row * rowStride, total, length, kvHeads, headDim)).toEqual(
          caches[row][l].value,
        );
      });
    });
  });

  it("holds zeros at every position past a row's length, in every head", () => {
    const { kvHeads, headDim } = shape;
    for (const layer of past)
      for (const tensor of [layer.key, layer.value])
        lengths.forEach((length, row) => {
          for (let head = 0; head < kvHeads; head++)
            for (let position = 0; position < total; position++) {
              const from = row * rowStride + (head * total + position) * headDim;
              const values = Array.from(tensor.subarray(from, from + headDim));
              if (position < length) expect(values.every((v) => v !== 0)).toBe(true);
              else expect(values).toEqual(new Array(headDim).fill(0));
            }
        });
  });
});

describe("extractKvRow on a compact cache", () => {
  it("keeps each head's first positions (a compact cache is a one-row batch of its own length)", () => {
    const { kvHeads, headDim } = shape;
    const full = compact(0, 3);
    const truncated = extractKvRow(full, 0, 3, 2, kvHeads, headDim);
    // Head 0: positions 0 and 1 of head 0; head 1: positions 0 and 1 of head 1.
    expect(Array.from(truncated)).toEqual([
      ...Array.from(full.subarray(0, 2 * headDim)),
      ...Array.from(full.subarray(3 * headDim, 5 * headDim)),
    ]);
  });
});

describe("concatRows", () => {
  it("stacks one row per session into a [rows, width] batch input, in order", () => {
    const rows = [Float32Array.of(1, 2), Float32Array.of(3, 4), Float32Array.of(5, 6)];
    expect(Array.from(concatRows(rows, 2))).toEqual([1, 2, 3, 4, 5, 6]);
  });
});
