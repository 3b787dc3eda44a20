import { mkdtempSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GraphIoError, InternalError } from "@tandem/common";
import { loadCheckpoint } from "../checkpoint/load-checkpoint.ts";
import type { Checkpoint } from "../checkpoint/model-weights.ts";
import { edgeSegmentSpec } from "../graph/deployment-specs.ts";
import { EMBEDDING_LAYOUT_FILE, readEmbeddingLayout } from "../graph/embedding-table-layout.ts";
import { ensureSegmentGraph, SEGMENT_WEIGHTS_FILE } from "../graph/graph-cache.ts";
import { quantizeNBits } from "../graph/nbits-quantizer.ts";
import type { WeightFormat } from "../graph/segment-spec.ts";
import { ODD_HIDDEN, TINY_TIED, writeRandomCheckpoint } from "../testing/random-checkpoint.ts";
import { EmbeddingTable } from "./embedding-table.ts";

let workDir: string;
let odd: Checkpoint;
let tied: Checkpoint;

beforeAll(async () => {
  workDir = mkdtempSync(join(tmpdir(), "tandem-embedding-table-"));
  await writeRandomCheckpoint(join(workDir, "odd"), ODD_HIDDEN);
  await writeRandomCheckpoint(join(workDir, "tied"), TINY_TIED);
  odd = await loadCheckpoint(join(workDir, "odd"));
  tied = await loadCheckpoint(join(workDir, "tied"));
});
afterAll(() => rmSync(workDir, { recursive: true, force: true }));

/** Builds the edge segment [0,2) of `checkpoint` in `format` into a cache of its own; its directory. */
async function builtEdge(checkpoint: Checkpoint, format: WeightFormat): Promise<string> {
  const cacheDir = mkdtempSync(join(workDir, "graphs-"));
  const spec = edgeSegmentSpec(2, [{ afterLayer: 2 }], format);
  return dirname(await ensureSegmentGraph(checkpoint, spec, cacheDir));
}

function openTable(graphDir: string): EmbeddingTable {
  return EmbeddingTable.open(
    join(graphDir, SEGMENT_WEIGHTS_FILE),
    readEmbeddingLayout(join(graphDir, EMBEDDING_LAYOUT_FILE)),
  );
}

/** Rows of the checkpoint's fp32 table. */
function checkpointRows(checkpoint: Checkpoint, ids: number[]): Float32Array {
  const { data } = checkpoint.weights.embedTokens;
  const cols = checkpoint.config.hiddenSize;
  const out = new Float32Array(ids.length * cols);
  ids.forEach((id, i) => out.set(data.subarray(id * cols, (id + 1) * cols), i * cols));
  return out;
}

/** The same rows through 8-bit blocks of 32, decoded as (q − 128) · scale. */
function int8Rows(checkpoint: Checkpoint, ids: number[]): Float32Array {
  const cols = checkpoint.config.hiddenSize;
  const exact = checkpointRows(checkpoint, ids);
  const q = quantizeNBits(exact, ids.length, cols, 8, 32);
  const out = new Float32Array(exact.length);
  for (let r = 0; r < ids.length; r++)
    for (let c = 0; c < cols; c++) {
      const block = r * q.blocksPerRow + Math.floor(c / 32);
      out[r * cols + c] = Math.fround((q.packed[block * 32 + (c % 32)] - 128) * q.scales[block]);
    }
  return out;
}

describe("EmbeddingTable: a layer-0 segment's tokens embedded from its weights file", () => {
  const ids = [0, 7, 300, 7, 151];

  it("fp32: the checkpoint's rows, bit for bit, repeated ids included", async () => {
    const table = openTable(await builtEdge(odd, "fp32"));
    try {
      expect(table.lookup(BigInt64Array.from(ids.map(BigInt)))).toEqual(checkpointRows(odd, ids));
    } finally {
      table.close();
    }
  });

  it.each(["int8", "int4"] as const)(
    "%s: the 8-bit blocks' rows, bit for bit, a row's padded last block cut off (hidden 72 = 2 blocks of 32 + 8)",
    async (format) => {
      const table = openTable(await builtEdge(odd, format));
      try {
        const rows = table.lookup(Int32Array.from(ids));
        expect(rows).toEqual(int8Rows(odd, ids));
        const exact = checkpointRows(odd, ids);
        const worst = Math.max(...rows.map((v, i) => Math.abs(v - exact[i])));
        expect(worst).toBeGreaterThan(0);
        expect(worst).toBeLessThan(0.02);
      } finally {
        table.close();
      }
    },
  );

  it("a tied int8 head multiplies by the very bytes the rows come from: one table in the file", async () => {
    const dir = await builtEdge(tied, "int8");
    const layout = readEmbeddingLayout(join(dir, EMBEDDING_LAYOUT_FILE));
    expect(layout).toMatchObject({ encoding: "int8-blocks", rows: 300, cols: 64, blockSize: 32 });
    const table = openTable(dir);
    try {
      expect(table.lookup([5, 299])).toEqual(int8Rows(tied, [5, 299]));
    } finally {
      table.close();
    }
  });

  it("an id outside the vocabulary is refused, naming it and where it stands", async () => {
    const table = openTable(await builtEdge(odd, "fp32"));
    try {
      expect(() => table.lookup([3, 301])).toThrow(InternalError);
      expect(() => table.lookup([3, 301])).toThrow("token id 301 at 1 is outside the vocabulary [0, 301)");
      expect(() => table.lookup([-1])).toThrow("token id -1 at 0");
    } finally {
      table.close();
    }
  });

  it("a weights file cut short, or a damaged layout file, is an I/O error naming the file", async () => {
    const dir = await builtEdge(odd, "int8");
    const layoutPath = join(dir, EMBEDDING_LAYOUT_FILE);
    const layout = readEmbeddingLayout(layoutPath);
    // Row 0 keeps its three scales; row 300 loses its own.
    truncateSync(join(dir, SEGMENT_WEIGHTS_FILE), layout.scales!.offset + 3 * 4);
    const table = openTable(dir);
    try {
      expect(() => table.lookup([0])).not.toThrow();
      expect(() => table.lookup([300])).toThrow(GraphIoError);
      expect(() => table.lookup([300])).toThrow(/segment\.weights: the embedding table ends before byte/);
    } finally {
      table.close();
    }
    writeFileSync(layoutPath, JSON.stringify({ ...layout, blockSize: 0 }));
    expect(() => readEmbeddingLayout(layoutPath)).toThrow(
      /embedding\.json: the embedding table's layout is not one/,
    );
    writeFileSync(layoutPath, "{");
    expect(() => readEmbeddingLayout(layoutPath)).toThrow(
      /embedding\.json: cannot read the embedding table's layout/,
    );
  });
});
