/**
 * The GGUF container (version 3), as llama.cpp reads it; everything little-endian:
 *
 *   "GGUF"  u32 version = 3  u64 tensor_count  u64 metadata_count
 *   metadata_count × (string key, u32 value_type, value)
 *   tensor_count   × (string name, u32 n_dims, n_dims × u64 ne, u32 ggml_type, u64 offset)
 *   zero padding to `general.alignment` (32)
 *   tensor data: each tensor at data_start + offset, offsets multiples of the alignment
 *
 * A string is a u64 byte length and UTF-8 bytes (no terminator); an array is a u32 item
 * type, a u64 count and the items. `ne` lists a tensor's dimensions innermost first: a
 * Hugging Face weight of shape [out, in] is ne = [in, out].
 *
 * The header is written first, from the tensors' declared types and sizes, and the data
 * after it tensor by tensor, so a model is never held whole in memory; each tensor's
 * bytes are checked against what its header entry declared.
 */
import { open } from "node:fs/promises";
import { encodedBytes, GGML_TYPE, type GgmlTypeName } from "./ggml-blocks.ts";

export const GGUF_MAGIC = "GGUF";
export const GGUF_VERSION = 3;
/** llama.cpp's default alignment; written as `general.alignment` too, so no reader has to assume it. */
export const GGUF_ALIGNMENT = 32;

/** GGUF's value types (enum gguf_type) for the values written here. */
export const GGUF_VALUE_TYPE = { UINT32: 4, INT32: 5, FLOAT32: 6, BOOL: 7, STRING: 8, ARRAY: 9 } as const;

/** A metadata value with the GGUF type it is written as. */
export type GgufValue =
  | { type: "uint32"; value: number }
  | { type: "float32"; value: number }
  | { type: "bool"; value: boolean }
  | { type: "string"; value: string }
  | { type: "string[]"; value: readonly string[] }
  | { type: "int32[]"; value: readonly number[] };

export const u32 = (value: number): GgufValue => ({ type: "uint32", value });
export const f32 = (value: number): GgufValue => ({ type: "float32", value });
export const bool = (value: boolean): GgufValue => ({ type: "bool", value });
export const str = (value: string): GgufValue => ({ type: "string", value });
export const strings = (value: readonly string[]): GgufValue => ({ type: "string[]", value });
export const int32s = (value: readonly number[]): GgufValue => ({ type: "int32[]", value });

export interface GgufTensor {
  name: string;
  /** Dimensions innermost first (ggml's ne). */
  ne: readonly number[];
  type: GgmlTypeName;
  /**
   * The tensor's bytes in order, in as many chunks as suits the producer; together
   * exactly encodedBytes(type, product of ne).
   */
  chunks(): AsyncIterable<Uint8Array> | Iterable<Uint8Array>;
}

/** Writes a GGUF file: the metadata in the given order, then the tensors in the given order. */
export async function writeGgufFile(
  path: string,
  metadata: ReadonlyArray<readonly [string, GgufValue]>,
  tensors: readonly GgufTensor[],
): Promise<void> {
  const header = new ByteWriter();
  header.bytes(Buffer.from(GGUF_MAGIC, "ascii"));
  header.u32(GGUF_VERSION);
  header.u64(tensors.length);
  header.u64(metadata.length);
  for (const [key, value] of metadata) {
    header.string(key);
    writeValue(header, value);
  }
  const sizes = tensors.map((t) =>
    encodedBytes(
      t.type,
      t.ne.reduce((a, b) => a * b, 1),
    ),
  );
  let offset = 0;
  for (const [i, t] of tensors.entries()) {
    header.string(t.name);
    header.u32(t.ne.length);
    for (const n of t.ne) header.u64(n);
    header.u32(GGML_TYPE[t.type]);
    header.u64(offset);
    offset = alignUp(offset + sizes[i]);
  }
  header.zeros(alignUp(header.length) - header.length);

  const file = await open(path, "w");
  try {
    await file.write(header.finish());
    for (const [i, t] of tensors.entries()) {
      let written = 0;
      for await (const chunk of t.chunks()) {
        if (written + chunk.length > sizes[i])
          throw new Error(`GGUF tensor ${t.name}: more than the ${sizes[i]} bytes its header declares`);
        await file.write(chunk);
        written += chunk.length;
      }
      if (written !== sizes[i])
        throw new Error(`GGUF tensor ${t.name}: ${written} bytes written, its header declares ${sizes[i]}`);
      // The last tensor is padded too: ggml's reader sizes the data section as the sum of
      // padded tensor sizes.
      const padding = alignUp(written) - written;
      if (padding > 0) await file.write(new Uint8Array(padding));
    }
  } finally {
    await file.close();
  }
}

function alignUp(n: number): number {
  return Math.ceil(n / GGUF_ALIGNMENT) * GGUF_ALIGNMENT;
}

function writeValue(out: ByteWriter, v: GgufValue): void {
  switch (v.type) {
    case "uint32":
      out.u32(GGUF_VALUE_TYPE.UINT32);
      out.u32(v.value);
      return;
    case "float32":
      out.u32(GGUF_VALUE_TYPE.FLOAT32);
      out.f32(v.value);
      return;
    case "bool":
      out.u32(GGUF_VALUE_TYPE.BOOL);
      out.u8(v.value ? 1 : 0);
      return;
    case "string":
      out.u32(GGUF_VALUE_TYPE.STRING);
      out.string(v.value);
      return;
    case "string[]":
      out.u32(GGUF_VALUE_TYPE.ARRAY);
      out.u32(GGUF_VALUE_TYPE.STRING);
      out.u64(v.value.length);
      for (const s of v.value) out.string(s);
      return;
    case "int32[]":
      out.u32(GGUF_VALUE_TYPE.ARRAY);
      out.u32(GGUF_VALUE_TYPE.INT32);
      out.u64(v.value.length);
      for (const n of v.value) out.i32(n);
      return;
  }
}

/** A growable little-endian byte buffer for the header (megabytes at most: the vocabulary). */
class ByteWriter {
  private buffer = Buffer.alloc(1 << 16);
  length = 0;

  private reserve(n: number): number {
    if (this.length + n > this.buffer.length) {
      const grown = Buffer.alloc(Math.max(this.buffer.length * 2, this.length + n));
      this.buffer.copy(grown, 0, 0, this.length);
      this.buffer = grown;
    }
    const at = this.length;
    this.length += n;
    return at;
  }

  // reserve() first, then the write: it may replace the buffer.
  u8(n: number): void {
    const at = this.reserve(1);
    this.buffer.writeUInt8(n, at);
  }
  u32(n: number): void {
    const at = this.reserve(4);
    this.buffer.writeUInt32LE(n, at);
  }
  i32(n: number): void {
    const at = this.reserve(4);
    this.buffer.writeInt32LE(n, at);
  }
  u64(n: number): void {
    const at = this.reserve(8);
    this.buffer.writeBigUInt64LE(BigInt(n), at);
  }
  f32(n: number): void {
    const at = this.reserve(4);
    this.buffer.writeFloatLE(n, at);
  }
  bytes(b: Uint8Array): void {
    const at = this.reserve(b.length);
    this.buffer.set(b, at);
  }
  zeros(n: number): void {
    const at = this.reserve(n);
    this.buffer.fill(0, at, at + n);
  }
  string(s: string): void {
    const b = Buffer.from(s, "utf8");
    this.u64(b.length);
    this.bytes(b);
  }
  finish(): Uint8Array {
    return this.buffer.subarray(0, this.length);
  }
}
