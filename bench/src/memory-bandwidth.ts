/**
 * Measures this machine's memory read bandwidth: ONNX Runtime sums a buffer far larger
 * than the caches (a streaming read, the access pattern of a memory-bound decode step).
 * The best of several runs at each thread count is the limit a decode can approach.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { loadOnnxGraphBuilder } from "@tandem/runtime";

export interface BandwidthResult {
  /** Best read bandwidth over all thread counts, GB/s (10^9 bytes). */
  readGbPerS: number;
  byThreads: { threads: number; readGbPerS: number }[];
  bufferMb: number;
}

export async function measureMemoryBandwidth(
  options: { bufferMb?: number; repeats?: number; threads?: number[] } = {},
): Promise<BandwidthResult> {
  const bufferMb = options.bufferMb ?? 512;
  const repeats = options.repeats ?? 5;
  const columns = 4096;
  const rows = Math.floor((bufferMb * 1024 * 1024) / 4 / columns);
  const { OnnxGraphBuilder, InMemoryExternalData } = await loadOnnxGraphBuilder();
  // No initializer is large enough to leave the model file.
  const builder = new OnnxGraphBuilder("bandwidth", new InMemoryExternalData("unused"));
  builder.input("x", "float32", ["rows", columns]);
  builder.node("ReduceSum", "/sum", ["x", builder.int64Constant([1])], {
    outputs: [builder.output("y", "float32", ["rows"])],
    attributes: { keepdims: 0 },
  });
  const dir = mkdtempSync(join(tmpdir(), "tandem-bandwidth-"));
  const path = join(dir, "bandwidth.onnx");
  writeFileSync(path, builder.build().model);
  const data = new Float32Array(rows * columns).fill(1);
  const input = new ort.Tensor("float32", data, [rows, columns]);
  const byThreads: BandwidthResult["byThreads"] = [];
  try {
    for (const threads of options.threads ?? [1, 2]) {
      const session = await ort.InferenceSession.create(path, {
        intraOpNumThreads: threads,
        interOpNumThreads: 1,
      });
      await session.run({ x: input });
      let best = Infinity;
      for (let i = 0; i < repeats; i++) {
        const start = performance.now();
        await session.run({ x: input });
        best = Math.min(best, performance.now() - start);
      }
      await session.release();
      byThreads.push({ threads, readGbPerS: data.byteLength / (best / 1000) / 1e9 });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return { readGbPerS: Math.max(...byThreads.map((b) => b.readGbPerS)), byThreads, bufferMb };
}
