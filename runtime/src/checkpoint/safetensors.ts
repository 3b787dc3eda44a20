/**
 * The safetensors format: an 8-byte little-endian header length N, N bytes of JSON
 * `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {...}}`, then the
 * tensor bytes (offsets relative to the end of the header). Reading validates every
 * field before any tensor is touched and converts F32/F16/BF16 to fp32; anything
 * malformed throws an error naming the file (and the tensor), because a checkpoint that
 * loads "mostly" produces garbage tokens much later, far from the cause.
 */
import { closeSync, openSync, readSync } from "node:fs";
import { type FileHandle, open } from "node:fs/promises";
import { CheckpointError, InvalidArgumentError, TensorMismatchError, UnsupportedError } from "@tandem/common";
import { bfloat16ToFloat32, float32ToBfloat16, float32ToHalf, halfToFloat32 } from "../numeric/float16.ts";

/** The dtypes Tandem reads weights from and writes. */
export type SafetensorsDtype = "F32" | "F16" | "BF16";

export const WEIGHT_DTYPES: readonly SafetensorsDtype[] = ["F32", "F16", "BF16"];

/**
 * Element sizes of every dtype the format defines, so a header with an integer tensor
 * (e.g. a position-id buffer) can still be validated and its other tensors read.
 */
const DTYPE_BYTES: Readonly<Record<string, number>> = {
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

/** The format caps headers at 100 MB; anything larger is a corrupt length field. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

const METADATA_KEY = "__metadata__";

export interface SafetensorsEntry {
  name: string;
  dtype: string;
  shape: number[];
  /** Byte range within the data section (after the header). */
  begin: number;
  end: number;
}

export interface DecodedTensor {
  shape: number[];
  data: Float32Array;
}

/** Where a file's bytes are: read from disk on demand, or already in memory. */
interface ByteSource {
  /** Bytes [begin, end) of the file, in a buffer of their own. */
  read(begin: number, end: number): Uint8Array;
}

class DiskBytes implements ByteSource {
  constructor(private readonly path: string) {}
  read(begin: number, end: number): Uint8Array {
    const out = new Uint8Array(end - begin);
    let fd: number;
    try {
      fd = openSync(this.path, "r");
    } catch (error) {
      throw new CheckpointError(this.path, `cannot be read (${(error as Error).message})`, { cause: error });
    }
    try {
      for (let done = 0; done < out.length;) {
        const n = readSync(fd, out, done, out.length - done, begin + done);
        if (n === 0)
          throw new CheckpointError(this.path, `ended at byte ${begin + done}, before byte ${end}`);
        done += n;
      }
    } finally {
      closeSync(fd);
    }
    return out;
  }
}

class MemoryBytes implements ByteSource {
  constructor(private readonly bytes: Uint8Array) {}
  read(begin: number, end: number): Uint8Array {
    // A copy (Buffer#slice would be a view): typed arrays need their own aligned buffer.
    const out = new Uint8Array(end - begin);
    out.set(this.bytes.subarray(begin, end));
    return out;
  }
}

/**
 * A safetensors file whose header has been read and validated; tensors are read (from
 * disk, or from memory for a parsed buffer) and decoded only on `read`, so opening a
 * checkpoint of any size costs its headers.
 */
export class SafetensorsFile {
  private constructor(
    readonly path: string,
    /** Bytes in the whole file. */
    readonly size: number,
    /** Header entries in file order. */
    readonly entries: Map<string, SafetensorsEntry>,
    readonly metadata: Record<string, string>,
    /** Where the data section starts: 8 + the header's length. */
    readonly dataStart: number,
    private readonly source: ByteSource,
  ) {}

  /** Reads and validates the file's header; throws CheckpointError if it cannot be read. */
  static async open(path: string): Promise<SafetensorsFile> {
    let handle;
    try {
      handle = await open(path, "r");
    } catch (error) {
      throw new CheckpointError(path, `cannot be read (${(error as Error).message})`, { cause: error });
    }
    try {
      const { size } = await handle.stat();
      const prefix = Buffer.alloc(8);
      const { bytesRead } = await handle.read(prefix, 0, 8, 0);
      const declared = bytesRead === 8 ? prefix.readBigUInt64LE(0) : 0n;
      const headerLength = validHeaderLength(path, size, bytesRead, declared);
      const header = Buffer.alloc(headerLength);
      await handle.read(header, 0, headerLength, 8);
      return SafetensorsFile.fromHeader(path, size, header, new DiskBytes(path));
    } finally {
      await handle.close();
    }
  }

  /** Validates `bytes` as a whole safetensors file; `path` only names it in errors. */
  static parse(path: string, bytes: Buffer): SafetensorsFile {
    const declared = bytes.length >= 8 ? bytes.readBigUInt64LE(0) : 0n;
    const headerLength = validHeaderLength(path, bytes.length, Math.min(8, bytes.length), declared);
    return SafetensorsFile.fromHeader(
      path,
      bytes.length,
      bytes.subarray(8, 8 + headerLength),
      new MemoryBytes(bytes),
    );
  }

  private static fromHeader(
    path: string,
    size: number,
    headerBytes: Buffer,
    source: ByteSource,
  ): SafetensorsFile {
    let header: unknown;
    try {
      header = JSON.parse(headerBytes.toString("utf8"));
    } catch (error) {
      throw new CheckpointError(path, `header is not valid JSON (${(error as Error).message})`, {
        cause: error,
      });
    }
    if (!isPlainObject(header)) throw new CheckpointError(path, "header is not a JSON object");

    const dataStart = 8 + headerBytes.length;
    const dataLength = size - dataStart;
    const entries = new Map<string, SafetensorsEntry>();
    let metadata: Record<string, string> = {};
    for (const [name, raw] of Object.entries(header)) {
      if (name === METADATA_KEY) metadata = parseMetadata(path, raw);
      else entries.set(name, parseEntry(path, name, raw));
    }

    for (const entry of entries.values()) {
      if (entry.end > dataLength) {
        throw new CheckpointError(
          path,
          `is truncated: tensor "${entry.name}" ends at data byte ${entry.end}, ` +
            `but only ${dataLength} data bytes follow the header`,
        );
      }
    }
    // Overlapping ranges would alias two weights; a corrupt header is the only way to get them.
    const sorted = [...entries.values()].filter((e) => e.end > e.begin).sort((a, b) => a.begin - b.begin);
    for (let i = 1; i < sorted.length; i++) {
      if (sorted[i].begin < sorted[i - 1].end) {
        throw new TensorMismatchError(
          path,
          sorted[i].name,
          `data_offsets [${sorted[i].begin}, ${sorted[i].end}] overlap tensor "${sorted[i - 1].name}" ` +
            `[${sorted[i - 1].begin}, ${sorted[i - 1].end}]`,
        );
      }
    }
    return new SafetensorsFile(path, size, entries, metadata, dataStart, source);
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  /** The file's bytes [begin, end), header included, undecoded (the weights hash samples them). */
  readBytes(begin: number, end: number): Uint8Array {
    return this.source.read(begin, end);
  }

  /** The header entry of `name`; throws TensorMismatchError if the file has no such tensor. */
  entry(name: string): SafetensorsEntry {
    const entry = this.entries.get(name);
    if (!entry) throw new TensorMismatchError(this.path, name, "is not in this file");
    return entry;
  }

  /** The header entry of `name`; throws UnsupportedError unless its dtype is one weights can have. */
  weightEntry(name: string): SafetensorsEntry {
    const entry = this.entry(name);
    if (!WEIGHT_DTYPES.includes(entry.dtype as SafetensorsDtype)) {
      throw new UnsupportedError(
        `${this.path}: tensor "${name}" has dtype ${entry.dtype}; weights must be ${WEIGHT_DTYPES.join(", ")}`,
      );
    }
    return entry;
  }

  /**
   * The header entry of `name`, a weight (weightEntry) of exactly `shape`; throws
   * TensorMismatchError naming both shapes. Reads the header only.
   */
  shapedEntry(name: string, shape: readonly number[]): SafetensorsEntry {
    const entry = this.weightEntry(name);
    const actual = entry.shape;
    if (actual.length !== shape.length || actual.some((d, i) => d !== shape[i])) {
      throw new TensorMismatchError(
        this.path,
        name,
        `has shape [${actual.join(", ")}], expected [${shape.join(", ")}]`,
      );
    }
    return entry;
  }

  /**
   * The tensor as `read` gives it, checked first for `shape` (shapedEntry) and then for
   * finite values: what a model or an exit head may be built from. A NaN or infinity
   * throws TensorMismatchError naming where, not NaN probabilities at run time.
   */
  readChecked(name: string, shape: readonly number[]): DecodedTensor {
    this.shapedEntry(name, shape);
    const tensor = this.read(name);
    const { data } = tensor;
    for (let i = 0; i < data.length; i++) {
      // NaN fails both comparisons; ±Infinity fails one.
      if (!(data[i] > -Infinity && data[i] < Infinity))
        throw new TensorMismatchError(
          this.path,
          name,
          `has a non-finite value (${data[i]}) at flat index ${i}`,
        );
    }
    return tensor;
  }

  /**
   * The tensor converted to fp32, in a buffer of its own: offsets inside the file need not
   * be aligned for typed arrays, and callers may keep or mutate the result freely.
   */
  read(name: string): DecodedTensor {
    const entry = this.weightEntry(name);
    const aligned = this.source.read(this.dataStart + entry.begin, this.dataStart + entry.end);
    return { shape: [...entry.shape], data: decode(entry.dtype, aligned, elementCount(entry.shape)) };
  }

  /**
   * Rows [begin, end) of a 2-D weight of exactly `shape` as fp32, read and decoded on their
   * own (a 1 GB embedding table converts in blocks), every value checked finite; throws
   * like readChecked, naming the row's flat index.
   */
  readRowsChecked(name: string, shape: readonly number[], begin: number, end: number): Float32Array {
    const entry = this.shapedEntry(name, shape);
    if (
      shape.length !== 2 ||
      !(Number.isInteger(begin) && Number.isInteger(end) && 0 <= begin && begin <= end && end <= shape[0])
    )
      throw new TensorMismatchError(
        this.path,
        name,
        `has no rows [${begin}, ${end}) of shape [${shape.join(", ")}]`,
      );
    const rowBytes = (entry.end - entry.begin) / shape[0];
    const aligned = this.source.read(
      this.dataStart + entry.begin + begin * rowBytes,
      this.dataStart + entry.begin + end * rowBytes,
    );
    const data = decode(entry.dtype, aligned, (end - begin) * shape[1]);
    for (let i = 0; i < data.length; i++)
      if (!(data[i] > -Infinity && data[i] < Infinity))
        throw new TensorMismatchError(
          this.path,
          name,
          `has a non-finite value (${data[i]}) at flat index ${begin * shape[1] + i}`,
        );
    return data;
  }
}

/** `count` values of a weight dtype from bytes in a buffer of their own, as fp32. */
function decode(dtype: string, aligned: Uint8Array, count: number): Float32Array {
  switch (dtype as SafetensorsDtype) {
    case "F32":
      return new Float32Array(aligned.buffer, 0, count);
    case "F16":
      return halfToFloat32(new Uint16Array(aligned.buffer, 0, count));
    case "BF16":
      return bfloat16ToFloat32(new Uint16Array(aligned.buffer, 0, count));
  }
}

/** Reads every tensor of a file as fp32, in file order. */
export async function readSafetensors(path: string): Promise<Map<string, DecodedTensor>> {
  const file = await SafetensorsFile.open(path);
  const tensors = new Map<string, DecodedTensor>();
  for (const name of file.entries.keys()) tensors.set(name, file.read(name));
  return tensors;
}

/** The header length a file's first 8 bytes declare, checked against the file's size. */
function validHeaderLength(path: string, size: number, prefixBytes: number, declared: bigint): number {
  if (prefixBytes < 8)
    throw new CheckpointError(path, `is ${size} bytes, too short for a safetensors header`);
  if (declared > BigInt(MAX_HEADER_BYTES) || 8n + declared > BigInt(size)) {
    throw new CheckpointError(
      path,
      `header length ${declared} exceeds the file size ${size} (truncated or not safetensors)`,
    );
  }
  return Number(declared);
}

function parseMetadata(path: string, raw: unknown): Record<string, string> {
  if (raw === null) return {};
  if (!isPlainObject(raw) || !Object.values(raw).every((v) => typeof v === "string"))
    throw new CheckpointError(path, `"${METADATA_KEY}" must map names to strings`);
  return raw as Record<string, string>;
}

function parseEntry(path: string, name: string, raw: unknown): SafetensorsEntry {
  if (!isPlainObject(raw)) throw new TensorMismatchError(path, name, "has no header entry object");
  const { dtype, shape, data_offsets: offsets } = raw;
  if (typeof dtype !== "string")
    throw new TensorMismatchError(path, name, `has no dtype (got ${JSON.stringify(dtype)})`);
  const dtypeBytes = DTYPE_BYTES[dtype];
  if (dtypeBytes === undefined)
    throw new UnsupportedError(`${path}: tensor "${name}" has dtype ${dtype}, which Tandem does not know`);
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new TensorMismatchError(path, name, `has invalid shape ${JSON.stringify(shape)}`);
  }
  if (
    !Array.isArray(offsets) ||
    offsets.length !== 2 ||
    !offsets.every((o) => Number.isSafeInteger(o) && o >= 0) ||
    offsets[0] > offsets[1]
  ) {
    throw new TensorMismatchError(path, name, `has invalid data_offsets ${JSON.stringify(offsets)}`);
  }
  const [begin, end] = offsets as [number, number];
  const dims = shape as number[];
  const expected = elementCount(dims) * dtypeBytes;
  if (end - begin !== expected) {
    throw new TensorMismatchError(
      path,
      name,
      `holds ${end - begin} bytes, but ${dtype} [${dims.join(", ")}] needs ${expected}`,
    );
  }
  return { name, dtype, shape: dims, begin, end };
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** The values a tensor of `shape` holds (1 for a scalar's []). */
export function elementCount(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export interface TensorToWrite {
  name: string;
  shape: number[];
  data: Float32Array;
}

/**
 * A tensor whose values are made only when it is written: a file of many GB is written a
 * tensor at a time, never held whole (writeSafetensorsStreaming). `values` is called once,
 * in file order.
 */
export interface LazyTensorToWrite {
  name: string;
  shape: number[];
  values(): Float32Array;
}

/**
 * The 8-byte length and the JSON header of a file holding `tensors` as `dtype`, in the
 * given order. Every name is checked (no repeats, not the metadata key) before any value
 * is made.
 */
function encodeHeader(
  tensors: readonly { name: string; shape: number[] }[],
  dtype: SafetensorsDtype,
  metadata?: Record<string, string>,
): Buffer {
  if (!WEIGHT_DTYPES.includes(dtype))
    throw new InvalidArgumentError("dtype", `must be one of ${WEIGHT_DTYPES.join(", ")}, got ${dtype}`);
  // Entries as pairs (not assignments) so no tensor name can reach Object.prototype.
  const entries: [string, unknown][] = metadata ? [[METADATA_KEY, metadata]] : [];
  const names = new Set<string>([METADATA_KEY]);
  const elementBytes = DTYPE_BYTES[dtype];
  let offset = 0;
  for (const t of tensors) {
    if (names.has(t.name))
      throw new InvalidArgumentError("tensors", `tensor name "${t.name}" is reserved or repeated`);
    names.add(t.name);
    const length = elementCount(t.shape) * elementBytes;
    entries.push([t.name, { dtype, shape: t.shape, data_offsets: [offset, offset + length] }]);
    offset += length;
  }
  // Pad the header with spaces to a multiple of 8 bytes, as the reference writer does, so
  // the data section (and every F32 tensor in it) starts aligned.
  let headerBytes = Buffer.from(JSON.stringify(Object.fromEntries(entries)), "utf8");
  const padding = (8 - (headerBytes.length % 8)) % 8;
  if (padding > 0) headerBytes = Buffer.concat([headerBytes, Buffer.alloc(padding, 0x20)]);
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(headerBytes.length));
  return Buffer.concat([prefix, headerBytes]);
}

/** One tensor's values as `dtype`'s bytes, after checking they fill its shape. */
function encodeValues(
  name: string,
  shape: readonly number[],
  data: Float32Array,
  dtype: SafetensorsDtype,
): Uint8Array {
  if (elementCount(shape) !== data.length) {
    throw new InvalidArgumentError(
      "tensors",
      `tensor "${name}" has ${data.length} values, but shape [${shape.join(", ")}] needs ${elementCount(shape)}`,
    );
  }
  return dtype === "F32"
    ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
    : new Uint8Array((dtype === "F16" ? float32ToHalf(data) : float32ToBfloat16(data)).buffer);
}

/**
 * Serializes fp32 tensors as `dtype`, in the given order (the order fixes the bytes, so
 * the same tensors always give the same file and the same weights hash).
 */
export function encodeSafetensors(
  tensors: readonly TensorToWrite[],
  dtype: SafetensorsDtype,
  metadata?: Record<string, string>,
): Buffer {
  const header = encodeHeader(tensors, dtype, metadata);
  return Buffer.concat([header, ...tensors.map((t) => encodeValues(t.name, t.shape, t.data, dtype))]);
}

/** Writes the bytes encodeSafetensors gives, a tensor at a time (writeSafetensorsStreaming). */
export async function writeSafetensors(
  path: string,
  tensors: readonly TensorToWrite[],
  dtype: SafetensorsDtype,
  metadata?: Record<string, string>,
): Promise<void> {
  const lazy = tensors.map(({ name, shape, data }) => ({ name, shape, values: () => data }));
  await writeSafetensorsStreaming(path, lazy, dtype, metadata);
}

/**
 * Writes the bytes encodeSafetensors gives, making each tensor's values only when its
 * turn comes and dropping them once written: memory holds one tensor, not the file. What
 * a 7B checkpoint (15 GB in BF16, 30 GB as fp32) needs on a machine of 24 GB.
 */
export async function writeSafetensorsStreaming(
  path: string,
  tensors: readonly LazyTensorToWrite[],
  dtype: SafetensorsDtype,
  metadata?: Record<string, string>,
): Promise<void> {
  const header = encodeHeader(tensors, dtype, metadata);
  const file = await open(path, "w");
  try {
    await writeAll(file, header);
    for (const t of tensors) await writeAll(file, encodeValues(t.name, t.shape, t.values(), dtype));
  } finally {
    await file.close();
  }
}

/** Writes all of `bytes`: one write(2) moves at most ~2 GB on Linux, and a tensor can be more. */
async function writeAll(file: FileHandle, bytes: Uint8Array): Promise<void> {
  for (let done = 0; done < bytes.length;) {
    const { bytesWritten } = await file.write(bytes, done, Math.min(bytes.length - done, 1 << 30));
    done += bytesWritten;
  }
}
