/**
 * The safetensors format: an 8-byte little-endian header length N, N bytes of JSON
 * `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {...}}`, then the
 * tensor bytes (offsets relative to the end of the header). Reading validates every
 * field and converts F32/F16/BF16 to fp32; anything malformed throws an error naming
 * the file (and the tensor).
 */
import { readFile, writeFile } from "node:fs/promises";
import { CheckpointError, TensorMismatchError, UnsupportedError } from "../errors.ts";
import { bfloat16ToFloat32, float32ToBfloat16, float32ToHalf, halfToFloat32 } from "../numeric/float16.ts";

export type SafetensorsDtype = "F32" | "F16" | "BF16";

const DTYPE_BYTES: Record<string, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
  U16: 2,
  U32: 4,
  U64: 8,
  F8_E4M3: 1,
  F8_E5M2: 1,
};

/** A header larger than this is not a plausible checkpoint header (the format caps it at 100 MB). */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export interface SafetensorsEntry {
  name: string;
  dtype: string;
  shape: number[];
  /** Byte range within the data section. */
  begin: number;
  end: number;
}

export class SafetensorsFile {
  private constructor(
    readonly path: string,
    readonly bytes: Buffer,
    readonly entries: Map<string, SafetensorsEntry>,
    readonly metadata: Record<string, string>,
    private readonly dataStart: number,
  ) {}

  static async open(path: string): Promise<SafetensorsFile> {
    let bytes: Buffer;
    try {
      bytes = await readFile(path);
    } catch (error) {
      throw new CheckpointError(path, `cannot be read (${(error as Error).message})`, { cause: error });
    }
    return SafetensorsFile.parse(path, bytes);
  }

  static parse(path: string, bytes: Buffer): SafetensorsFile {
    if (bytes.length < 8)
      throw new CheckpointError(path, `is ${bytes.length} bytes, too short for a safetensors header`);
    const headerLength = Number(bytes.readBigUInt64LE(0));
    if (headerLength > MAX_HEADER_BYTES || 8 + headerLength > bytes.length) {
      throw new CheckpointError(path, `header length ${headerLength} exceeds the file size ${bytes.length}`);
    }
    let header: unknown;
    try {
      header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString("utf8"));
    } catch (error) {
      throw new CheckpointError(path, `header is not valid JSON (${(error as Error).message})`, {
        cause: error,
      });
    }
    if (typeof header !== "object" || header === null || Array.isArray(header)) {
      throw new CheckpointError(path, "header is not a JSON object");
    }
    const dataStart = 8 + headerLength;
    const dataLength = bytes.length - dataStart;
    const entries = new Map<string, SafetensorsEntry>();
    let metadata: Record<string, string> = {};
    for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
      if (name === "__metadata__") {
        metadata = (raw ?? {}) as Record<string, string>;
        continue;
      }
      entries.set(name, parseEntry(path, name, raw, dataLength));
    }
    // Tensors must not overlap: a corrupt header could otherwise alias two weights.
    const sorted = [...entries.values()].sort((a, b) => a.begin - b.begin);
    for (let i = 1; i < sorted.length; i++) {
      if (sorted[i].begin < sorted[i - 1].end) {
        throw new TensorMismatchError(path, sorted[i].name, `overlaps tensor "${sorted[i - 1].name}"`);
      }
    }
    return new SafetensorsFile(path, bytes, entries, metadata, dataStart);
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  /** The tensor as fp32 (a copy). */
  read(name: string): { shape: number[]; data: Float32Array } {
    const entry = this.entries.get(name);
    if (!entry) throw new TensorMismatchError(this.path, name, "is not in this file");
    const raw = this.bytes.subarray(this.dataStart + entry.begin, this.dataStart + entry.end);
    // Copy into an aligned buffer: offsets in the file need not be aligned for typed arrays.
    const aligned = new Uint8Array(raw.length);
    aligned.set(raw);
    const count = entry.shape.reduce((a, b) => a * b, 1);
    switch (entry.dtype) {
      case "F32":
        return { shape: entry.shape, data: new Float32Array(aligned.buffer, 0, count) };
      case "F16":
        return { shape: entry.shape, data: halfToFloat32(new Uint16Array(aligned.buffer, 0, count)) };
      case "BF16":
        return { shape: entry.shape, data: bfloat16ToFloat32(new Uint16Array(aligned.buffer, 0, count)) };
      default:
        throw new UnsupportedError(
          `${this.path}: tensor "${name}" has dtype ${entry.dtype}; weights must be F32, F16 or BF16`,
        );
    }
  }
}

function parseEntry(path: string, name: string, raw: unknown, dataLength: number): SafetensorsEntry {
  const entry = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
  if (typeof entry !== "object" || entry === null)
    throw new TensorMismatchError(path, name, "has no header entry object");
  if (typeof entry.dtype !== "string" || !(entry.dtype in DTYPE_BYTES)) {
    throw new TensorMismatchError(path, name, `has unknown dtype ${JSON.stringify(entry.dtype)}`);
  }
  if (!Array.isArray(entry.shape) || !entry.shape.every((d) => Number.isInteger(d) && d >= 0)) {
    throw new TensorMismatchError(path, name, `has invalid shape ${JSON.stringify(entry.shape)}`);
  }
  const offsets = entry.data_offsets;
  if (
    !Array.isArray(offsets) ||
    offsets.length !== 2 ||
    !offsets.every((o) => Number.isInteger(o) && o >= 0)
  ) {
    throw new TensorMismatchError(path, name, `has invalid data_offsets ${JSON.stringify(offsets)}`);
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end || end > dataLength) {
    throw new TensorMismatchError(
      path,
      name,
      `data_offsets [${begin}, ${end}] lie outside the ${dataLength} data bytes (truncated file?)`,
    );
  }
  const shape = entry.shape as number[];
  const expected = shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[entry.dtype];
  if (end - begin !== expected) {
    throw new TensorMismatchError(
      path,
      name,
      `holds ${end - begin} bytes, but ${entry.dtype} ${JSON.stringify(shape)} needs ${expected}`,
    );
  }
  return { name, dtype: entry.dtype, shape, begin, end };
}

export interface TensorToWrite {
  name: string;
  shape: number[];
  data: Float32Array;
}

/** Serializes fp32 tensors as F32, F16 or BF16, in the given order. */
export function encodeSafetensors(
  tensors: TensorToWrite[],
  dtype: SafetensorsDtype,
  metadata?: Record<string, string>,
): Buffer {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const t of tensors) {
    const encoded =
      dtype === "F32"
        ? new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength)
        : new Uint8Array((dtype === "F16" ? float32ToHalf(t.data) : float32ToBfloat16(t.data)).buffer);
    header[t.name] = { dtype, shape: t.shape, data_offsets: [offset, offset + encoded.length] };
    chunks.push(encoded);
    offset += encoded.length;
  }
  // Pad the header with spaces to 8 bytes, as the reference implementation does, so data is aligned.
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8);
  const headerBytes = Buffer.from(json, "utf8");
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(headerBytes.length));
  return Buffer.concat([prefix, headerBytes, ...chunks]);
}

export async function writeSafetensors(
  path: string,
  tensors: TensorToWrite[],
  dtype: SafetensorsDtype,
  metadata?: Record<string, string>,
): Promise<void> {
  await writeFile(path, encodeSafetensors(tensors, dtype, metadata));
}
