/**
 * The token embedding of a segment that starts at layer 0, looked up by the engine rather
 * than gathered inside the graph (graph/embedding-table-layout.ts says why): each row is
 * read from the segment's weights file when a token needs it — one positioned read per row
 * (two for 8-bit blocks: values and scales) — and decoded into the hidden states the
 * graph starts from. The file stays open for the model's life; the table itself is never
 * held.
 */
import { closeSync, openSync, readSync } from "node:fs";
import { GraphIoError, InternalError } from "@tandem/common";
import type { EmbeddingTableLayout } from "../graph/embedding-table-layout.ts";

/** 8-bit blocks are stored unsigned around this zero point (MatMulNBits's default). */
const INT8_ZERO_POINT = 128;

export class EmbeddingTable {
  private readonly fd: number;
  private readonly blocksPerRow: number;
  /** One row's packed values and scales, reused across lookups (int8-blocks only). */
  private readonly rowValues: Uint8Array;
  private readonly rowScales: Float32Array;
  /** rowScales' bytes, what a read fills. */
  private readonly rowScaleBytes: Uint8Array;

  private constructor(
    private readonly path: string,
    private readonly layout: EmbeddingTableLayout,
  ) {
    this.fd = openSync(path, "r");
    const blockSize = layout.blockSize ?? layout.cols;
    this.blocksPerRow = Math.ceil(layout.cols / blockSize);
    const int8 = layout.encoding === "int8-blocks";
    this.rowValues = new Uint8Array(int8 ? this.blocksPerRow * blockSize : 0);
    this.rowScales = new Float32Array(int8 ? this.blocksPerRow : 0);
    this.rowScaleBytes = new Uint8Array(this.rowScales.buffer);
  }

  /** Opens the weights file at `path`, whose table `layout` describes. */
  static open(path: string, layout: EmbeddingTableLayout): EmbeddingTable {
    try {
      return new EmbeddingTable(path, layout);
    } catch (error) {
      throw new GraphIoError(path, `cannot open the embedding table (${(error as Error).message})`, {
        cause: error,
      });
    }
  }

  /** The hidden size: values per row. */
  get cols(): number {
    return this.layout.cols;
  }

  /**
   * The rows of `ids`, [ids.length, cols] row-major, as fp32 — bit for bit what a Gather
   * (fp32) or GatherBlockQuantized (8-bit blocks) over the same table gives. Every id must
   * lie in [0, rows): the callers check tokens where they come in, so one outside is a bug.
   */
  lookup(ids: BigInt64Array | Int32Array | readonly number[]): Float32Array {
    const { rows, cols } = this.layout;
    const out = new Float32Array(ids.length * cols);
    for (let i = 0; i < ids.length; i++) {
      const id = Number(ids[i]);
      if (!Number.isInteger(id) || id < 0 || id >= rows)
        throw new InternalError(`token id ${String(ids[i])} at ${i} is outside the vocabulary [0, ${rows})`);
      if (this.layout.encoding === "float32") this.readFloatRow(id, out, i * cols);
      else this.readInt8Row(id, out, i * cols);
    }
    return out;
  }

  close(): void {
    closeSync(this.fd);
  }

  private readFloatRow(id: number, out: Float32Array, at: number): void {
    const bytes = this.layout.cols * 4;
    const target = new Uint8Array(out.buffer, out.byteOffset + at * 4, bytes);
    this.readFully(target, this.layout.values.offset + id * bytes);
  }

  private readInt8Row(id: number, out: Float32Array, at: number): void {
    const { cols, values, scales } = this.layout;
    const { rowValues, rowScales, blocksPerRow } = this;
    this.readFully(rowValues, values.offset + id * rowValues.length);
    this.readFully(this.rowScaleBytes, scales!.offset + id * blocksPerRow * 4);
    const blockSize = rowValues.length / blocksPerRow;
    for (let c = 0; c < cols; c++)
      out[at + c] = (rowValues[c] - INT8_ZERO_POINT) * rowScales[(c / blockSize) | 0];
  }

  private readFully(target: Uint8Array, position: number): void {
    for (let read = 0; read < target.length;) {
      const n = readSync(this.fd, target, read, target.length - read, position + read);
      if (n === 0)
        throw new GraphIoError(this.path, `the embedding table ends before byte ${position + target.length}`);
      read += n;
    }
  }
}
