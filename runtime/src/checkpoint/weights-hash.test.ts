import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { encodeSafetensors, SafetensorsFile } from "./safetensors.ts";
import { SAMPLE_BYTES, SAMPLE_STRIDE_BYTES, sampledRanges, weightsHash } from "./weights-hash.ts";

const CONFIG = Buffer.from('{"model_type": "llama"}');
/** 3 × 8 MiB of fp32: large enough to be sampled, not read whole. */
const LARGE = (3 * SAMPLE_STRIDE_BYTES) / 4;

function file(name: string, tensors: Record<string, Float32Array>): SafetensorsFile {
  const bytes = encodeSafetensors(
    Object.entries(tensors).map(([tensor, data]) => ({ name: tensor, shape: [data.length], data })),
    "F32",
  );
  return SafetensorsFile.parse(`/models/x/${name}`, Buffer.from(bytes));
}

const BASE = {
  small: Float32Array.from({ length: 100 }, (_, i) => i / 7),
  large: Float32Array.from({ length: LARGE }, (_, i) => Math.sin(i)),
};

/** Fresh copies of the same weights, for a test to change. */
function weights(): { small: Float32Array; large: Float32Array } {
  return { small: BASE.small.slice(), large: BASE.large.slice() };
}

describe("the weights hash", () => {
  it("is sha256 over a version tag, config.json, and per file its name, size, header and sampled tensor bytes", () => {
    const { small, large } = weights();
    const f = file("model.safetensors", { small, large });
    const expected = createHash("sha256")
      .update("tandem-weights-v2\n")
      .update(CONFIG)
      .update(`\nmodel.safetensors\0${f.size}\0`)
      .update(f.readBytes(0, f.dataStart));
    for (const tensor of [f.entry("small"), f.entry("large")])
      for (const [from, to] of sampledRanges(tensor.begin, tensor.end))
        expected.update(f.readBytes(f.dataStart + from, f.dataStart + to));
    expect(weightsHash(CONFIG, [f])).toBe(expected.digest("hex"));
  });

  it("reads a small tensor whole, a large one at its first and last bytes and every stride between", () => {
    expect(sampledRanges(100, 100 + 2 * SAMPLE_BYTES)).toEqual([[100, 100 + 2 * SAMPLE_BYTES]]);
    expect(sampledRanges(5, 5)).toEqual([]);
    const end = 3 * SAMPLE_STRIDE_BYTES;
    expect(sampledRanges(0, end)).toEqual([
      [0, SAMPLE_BYTES],
      [SAMPLE_STRIDE_BYTES, SAMPLE_STRIDE_BYTES + SAMPLE_BYTES],
      [2 * SAMPLE_STRIDE_BYTES, 2 * SAMPLE_STRIDE_BYTES + SAMPLE_BYTES],
      [end - SAMPLE_BYTES, end],
    ]);
  });

  it("reads a few KB of each 8 MB of weights, not the weights", () => {
    const f = file("model.safetensors", weights());
    let read = 0;
    const readBytes = f.readBytes.bind(f);
    f.readBytes = (begin, end) => {
      read += end - begin;
      return readBytes(begin, end);
    };
    weightsHash(CONFIG, [f]);
    // The header, the small tensor whole (100 fp32), four samples of the large one.
    expect(read).toBe(f.dataStart + 400 + 4 * SAMPLE_BYTES);
    expect(read / f.size).toBeLessThan(0.001);
  });

  describe("changes with", () => {
    const base = weightsHash(CONFIG, [file("model.safetensors", weights())]);
    const changed = (mutate: (w: ReturnType<typeof weights>) => void, name = "model.safetensors") => {
      const w = weights();
      mutate(w);
      return weightsHash(CONFIG, [file(name, w)]);
    };

    it("config.json", () => {
      expect(
        weightsHash(Buffer.from('{"model_type": "qwen2"}'), [file("model.safetensors", weights())]),
      ).not.toBe(base);
    });
    it("any value of a small tensor", () => {
      expect(changed((w) => (w.small[57] += 1e-3))).not.toBe(base);
    });
    it("a large tensor's values rewritten (a fine-tune, another seed)", () => {
      expect(changed((w) => w.large.forEach((v, i) => (w.large[i] = v * 1.0001)))).not.toBe(base);
    });
    it("a value in a large tensor's first, last or strided block", () => {
      expect(changed((w) => (w.large[0] = 2))).not.toBe(base);
      expect(changed((w) => (w.large[LARGE - 1] = 2))).not.toBe(base);
      expect(changed((w) => (w.large[SAMPLE_STRIDE_BYTES / 4 + 3] = 2))).not.toBe(base);
    });
    it("a tensor's shape, name or file", () => {
      expect(changed((w) => (w.small = w.small.subarray(0, 99)))).not.toBe(base);
      expect(
        weightsHash(CONFIG, [file("model.safetensors", { other: weights().small, large: weights().large })]),
      ).not.toBe(base);
      expect(changed(() => undefined, "model-00001-of-00001.safetensors")).not.toBe(base);
    });
  });

  it("does not see a single value changed between two samples of a large tensor (the stated limit)", () => {
    const w = weights();
    w.large[SAMPLE_STRIDE_BYTES / 8] += 1;
    expect(weightsHash(CONFIG, [file("model.safetensors", w)])).toBe(
      weightsHash(CONFIG, [file("model.safetensors", weights())]),
    );
  });
});
