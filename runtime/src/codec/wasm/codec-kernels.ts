/**
 * The WebAssembly codec kernels (codec-kernels.wat) and the one memory they work in.
 *
 * One instance per process, shared by every codec object: a worker opens a codec per
 * session, and an instance per session would cost its memory (64 KiB at least) each.
 * Calls are synchronous and JavaScript runs one at a time, so sharing needs no locking;
 * a caller lays its data out from `scratchAt`, calls a kernel and reads the result back
 * before returning.
 *
 * Layout: fixed tables first (a rotation's sign pattern per hidden size, written once),
 * then the scratch region, which holds nothing between calls. Callers keep each call's
 * scratch within SCRATCH_BYTES by working in chunks of tokens, so a catch-up frame of
 * thousands of positions does not grow the memory.
 */
import type {} from "./webassembly-globals.ts";
import { CODEC_KERNELS_WASM_BASE64 } from "./generated/codec-kernels.ts";

/** What a caller may lay out in scratch per call: chunks of tokens keep within it. */
export const SCRATCH_BYTES = 256 * 1024;
const WASM_PAGE_BYTES = 64 * 1024;

interface KernelExports {
  memory: WebAssembly.Memory;
  rotate(data: number, signs: number, dim: number, count: number, block: number, norm: number): void;
  unrotate(data: number, factors: number, dim: number, count: number, block: number): void;
  group_absmax_bits(src: number, groups: number, g: number, out: number): void;
  int4_quantize(src: number, groups: number, g: number, scales: number, inverses: number, dst: number): void;
  int4_dequantize(src: number, groups: number, g: number, dst: number): number;
  int8_quantize(src: number, count: number, dim: number, scales: number, inverses: number, dst: number): void;
  int8_dequantize(src: number, count: number, dim: number, dst: number): void;
}

export class CodecKernels {
  readonly exports: KernelExports;
  /** Where scratch begins: after the tables, 16-byte aligned. */
  private tablesEnd = 0;
  private readonly tables = new Map<string, number>();

  constructor() {
    const module = new WebAssembly.Module(Buffer.from(CODEC_KERNELS_WASM_BASE64, "base64"));
    this.exports = new WebAssembly.Instance(module).exports as unknown as KernelExports;
    this.ensureBytes(SCRATCH_BYTES);
  }

  get buffer(): ArrayBuffer {
    return this.exports.memory.buffer;
  }

  /**
   * The first byte of scratch, with at least `bytes` of it (more than SCRATCH_BYTES only
   * for a single token too large for it). It moves when a table is added: ask per call,
   * after taking tables.
   */
  scratch(bytes: number): number {
    this.ensureBytes(Math.max(bytes, SCRATCH_BYTES));
    return this.tablesEnd;
  }

  /** The offset of the table `key`, written from `values` the first time it is asked for. */
  table(key: string, values: () => Float32Array): number {
    let at = this.tables.get(key);
    if (at === undefined) {
      const data = values();
      at = this.tablesEnd;
      this.tablesEnd = align16(at + 4 * data.length);
      this.ensureBytes(SCRATCH_BYTES);
      new Float32Array(this.buffer, at, data.length).set(data);
      this.tables.set(key, at);
    }
    return at;
  }

  /** Float32 view of scratch bytes [at, at + 4·length) (views die when memory grows: take them per call). */
  f32(at: number, length: number): Float32Array {
    return new Float32Array(this.buffer, at, length);
  }

  private ensureBytes(scratchBytes: number): void {
    const { memory } = this.exports;
    const needed = this.tablesEnd + scratchBytes;
    if (needed > memory.buffer.byteLength)
      memory.grow(Math.ceil((needed - memory.buffer.byteLength) / WASM_PAGE_BYTES));
  }
}

export function align16(bytes: number): number {
  return Math.ceil(bytes / 16) * 16;
}

let shared: CodecKernels | undefined;

/** The process's kernels, instantiated on first use. */
export function codecKernels(): CodecKernels {
  shared ??= new CodecKernels();
  return shared;
}
