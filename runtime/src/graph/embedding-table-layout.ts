/**
 * Where a layer-0 segment's token embedding table sits in its weights file, and how its
 * rows are encoded. The engine looks rows up itself (engine/embedding-table.ts) instead of
 * the graph gathering them: a table held by the graph stays resident for the session's
 * life — and twice where a tied LM head multiplies by it, since ONNX Runtime prepacks the
 * head's weight into a layout of its own and keeps the original for the gather — while
 * rows read from the file on demand cost a few microseconds a token and leave the table in
 * the page cache, which the kernel can reclaim.
 *
 * Written by the graph build beside the graph (EMBEDDING_LAYOUT_FILE), read at load.
 */
import { readFileSync } from "node:fs";
import { GraphIoError } from "@tandem/common";
import type { ExternalRegion } from "./onnx-graph-builder.ts";

export const EMBEDDING_LAYOUT_FILE = "embedding.json";

export type EmbeddingEncoding = "float32" | "int8-blocks";

export interface EmbeddingTableLayout {
  /** The vocabulary size. */
  rows: number;
  /** The hidden size. */
  cols: number;
  /**
   * float32: `values` is [rows, cols] fp32. int8-blocks: `values` is [rows, blocksPerRow,
   * blockSize] uint8 (a row's last block padded), a value being (q − 128) · its block's
   * scale, and `scales` is [rows · blocksPerRow] fp32 — MatMulNBits's 8-bit layout, so a
   * tied int8 head multiplies by these very bytes.
   */
  encoding: EmbeddingEncoding;
  values: ExternalRegion;
  scales?: ExternalRegion;
  blockSize?: number;
}

/** Reads and checks a layout file; a damaged one names itself rather than misreading rows. */
export function readEmbeddingLayout(path: string): EmbeddingTableLayout {
  let layout: EmbeddingTableLayout;
  try {
    layout = JSON.parse(readFileSync(path, "utf8")) as EmbeddingTableLayout;
  } catch (error) {
    throw new GraphIoError(path, `cannot read the embedding table's layout (${(error as Error).message})`, {
      cause: error,
    });
  }
  const region = (r: ExternalRegion | undefined) =>
    r !== undefined && Number.isSafeInteger(r.offset) && r.offset >= 0 && Number.isSafeInteger(r.length);
  const { rows, cols, encoding, blockSize } = layout;
  const valid =
    Number.isSafeInteger(rows) &&
    rows > 0 &&
    Number.isSafeInteger(cols) &&
    cols > 0 &&
    region(layout.values) &&
    (encoding === "float32"
      ? layout.values.length === rows * cols * 4
      : encoding === "int8-blocks" &&
        Number.isSafeInteger(blockSize) &&
        blockSize! > 0 &&
        region(layout.scales) &&
        layout.values.length === rows * Math.ceil(cols / blockSize!) * blockSize! &&
        layout.scales!.length === rows * Math.ceil(cols / blockSize!) * 4);
  if (!valid) throw new GraphIoError(path, "the embedding table's layout is not one the engine reads");
  return layout;
}
