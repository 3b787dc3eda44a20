import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UnsupportedError } from "@tandem/common";
import { type Checkpoint, loadCheckpoint, SegmentModel, SegmentSessions, segmentSpec } from "@tandem/runtime";
import {
  halfToFloat32,
  type RandomCheckpointSpec,
  TINY_LLAMA,
  writeRandomCheckpoint,
} from "@tandem/runtime/testing";
import { DEMO_MODEL } from "../bench-paths.ts";
import { encodedBytes, encodeValues, GGML_TYPE, type GgmlTypeName } from "./ggml-blocks.ts";
import { GGUF_ALIGNMENT } from "./gguf-file.ts";
import { type GgufFileType, interleaveRopeHalves, TOKEN_TYPE, writeCheckpointGguf } from "./gguf-writer.ts";
import { ensureNodeLlamaCpp, LlamaCppModel, llamaCppGreedy } from "./llama-cpp-runner.ts";

const root = mkdtempSync(join(tmpdir(), "tandem-gguf-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** A block of 32 values: `head` first, zeros after. */
function block(...head: number[]): Float32Array {
  const values = new Float32Array(32);
  values.set(head);
  return values;
}

/** The fp16 scale of block `b` of an encoding with `blockBytes` bytes a block. */
function scaleBits(bytes: Uint8Array, b = 0, blockBytes = 34): number {
  return bytes[b * blockBytes] | (bytes[b * blockBytes + 1] << 8);
}

describe("Q8_0 blocks (ggml's quantize_row_q8_0_ref)", () => {
  it("scale amax/127 as fp16, then each value rounded half away from zero", () => {
    const bytes = encodeValues("Q8_0", block(127, -63.5, 0.5, -0.5, 1.49, 2.5, -2.5));
    expect(bytes.length).toBe(34);
    expect(scaleBits(bytes)).toBe(0x3c00); // d = 1
    expect([...new Int8Array(bytes.buffer, 2, 8)]).toEqual([127, -64, 1, -1, 1, 3, -3, 0]);
  });

  it("a negative extreme scales the same as a positive one", () => {
    const bytes = encodeValues("Q8_0", block(-254, 3, -3, 1));
    expect(scaleBits(bytes)).toBe(0x4000); // d = 2
    expect([...new Int8Array(bytes.buffer, 2, 5)]).toEqual([-127, 2, -2, 1, 0]);
  });

  it("an all-zero block is 34 zero bytes", () => {
    expect([...encodeValues("Q8_0", block())]).toEqual(new Array(34).fill(0));
  });

  it("a row is its blocks one after another", () => {
    const row = new Float32Array(64);
    row.set(block(127), 0);
    row.set(block(-254), 32);
    const bytes = encodeValues("Q8_0", row);
    expect(bytes.length).toBe(encodedBytes("Q8_0", 64));
    expect([scaleBits(bytes, 0), scaleBits(bytes, 1)]).toEqual([0x3c00, 0x4000]);
    expect([new Int8Array(bytes.buffer)[2], new Int8Array(bytes.buffer)[34 + 2]]).toEqual([127, -127]);
  });
});

describe("Q4_0 blocks (ggml's quantize_row_q4_0_ref)", () => {
  /** The 32 nibbles of a block: element j is byte j's low nibble, element 16 + j its high one. */
  const nibbles = (bytes: Uint8Array) => [
    ...[...bytes.subarray(2, 18)].map((b) => b & 15),
    ...[...bytes.subarray(2, 18)].map((b) => b >> 4),
  ];

  it("a negative extreme: d = max/-8 > 0 and q = min(15, trunc(x/d + 8.5))", () => {
    const values = block(-8, 7, 7.6, 0, -0.5, -0.6, 0.49, 0.5);
    values[16] = 7;
    values[17] = -8;
    const bytes = encodeValues("Q4_0", values);
    expect(bytes.length).toBe(18);
    expect(scaleBits(bytes, 0, 18)).toBe(0x3c00); // d = 1
    const q = nibbles(bytes);
    expect(q.slice(0, 9)).toEqual([0, 15, 15, 8, 8, 7, 8, 9, 8]);
    expect(q.slice(16, 19)).toEqual([15, 0, 8]);
    expect(bytes[2]).toBe(0 | (15 << 4)); // element 0 low, element 16 high
  });

  it("a positive extreme: d < 0, the extreme maps to 0 and the other side clips at 15", () => {
    const bytes = encodeValues("Q4_0", block(8, -8, 4));
    expect(scaleBits(bytes, 0, 18)).toBe(0xbc00); // d = -1
    expect(nibbles(bytes).slice(0, 4)).toEqual([0, 15, 4, 8]);
  });

  it("on a tie of magnitudes the first value sets the scale's sign", () => {
    expect(scaleBits(encodeValues("Q4_0", block(3, -3)), 0, 18)).toBe(0xb600); // -0.375
    expect(scaleBits(encodeValues("Q4_0", block(-3, 3)), 0, 18)).toBe(0x3600); // +0.375
  });

  it("an all-zero block has scale -0 (0/-8 in C) and every nibble 8", () => {
    const bytes = encodeValues("Q4_0", block());
    expect(scaleBits(bytes, 0, 18)).toBe(0x8000);
    expect([...bytes.subarray(2)]).toEqual(new Array(16).fill(0x88));
  });
});

describe("RoPE row order for llama.cpp", () => {
  it("row 2i + j of each head is row j·headDim/2 + i: halves interleaved", () => {
    // Two heads of 4 rows, one column: rows 0..7.
    const rows = Float32Array.from([0, 1, 2, 3, 4, 5, 6, 7]);
    expect([...interleaveRopeHalves(rows, 1, 4)]).toEqual([0, 2, 1, 3, 4, 6, 5, 7]);
  });
});

// ── A small GGUF reader, enough for the files written here ──────────────────────────

interface ParsedGguf {
  version: number;
  metadata: Map<string, unknown>;
  tensors: Map<string, { ne: number[]; type: number; offset: number }>;
  dataStart: number;
  bytes: Buffer;
}

function readGguf(path: string): ParsedGguf {
  const bytes = readFileSync(path);
  let at = 0;
  const u32 = () => ((at += 4), bytes.readUInt32LE(at - 4));
  const u64 = () => ((at += 8), Number(bytes.readBigUInt64LE(at - 8)));
  const string = () => {
    const n = u64();
    at += n;
    return bytes.toString("utf8", at - n, at);
  };
  const value = (type: number): unknown => {
    switch (type) {
      case 4:
        return u32();
      case 5:
        return ((at += 4), bytes.readInt32LE(at - 4));
      case 6:
        return ((at += 4), bytes.readFloatLE(at - 4));
      case 7:
        return ((at += 1), bytes[at - 1] === 1);
      case 8:
        return string();
      case 9: {
        const itemType = u32();
        return Array.from({ length: u64() }, () => value(itemType));
      }
      default:
        throw new Error(`value type ${type} is not one this writer uses`);
    }
  };
  expect(bytes.toString("ascii", 0, 4)).toBe("GGUF");
  at = 4;
  const version = u32();
  const tensorCount = u64();
  const metadataCount = u64();
  const metadata = new Map<string, unknown>();
  for (let i = 0; i < metadataCount; i++) {
    const key = string();
    metadata.set(key, value(u32()));
  }
  const tensors = new Map<string, { ne: number[]; type: number; offset: number }>();
  for (let i = 0; i < tensorCount; i++) {
    const name = string();
    const ne = Array.from({ length: u32() }, () => u64());
    tensors.set(name, { ne, type: u32(), offset: u64() });
  }
  const dataStart = Math.ceil(at / GGUF_ALIGNMENT) * GGUF_ALIGNMENT;
  return { version, metadata, tensors, dataStart, bytes };
}

/** A tensor's values, decoded as ggml's dequantize_row_* does. */
function tensorValues(file: ParsedGguf, name: string): Float32Array {
  const info = file.tensors.get(name)!;
  const count = info.ne.reduce((a, b) => a * b, 1);
  const type = Object.entries(GGML_TYPE).find(([, id]) => id === info.type)![0] as GgmlTypeName;
  const start = file.dataStart + info.offset;
  const data = file.bytes.subarray(start, start + encodedBytes(type, count));
  if (type === "F32") return new Float32Array(Uint8Array.from(data).buffer);
  const out = new Float32Array(count);
  const blockBytes = type === "Q8_0" ? 34 : 18;
  for (let b = 0; b < count / 32; b++) {
    const at = b * blockBytes;
    const d = halfToFloat32(Uint16Array.of(data.readUInt16LE(at)))[0];
    for (let j = 0; j < 32; j++) {
      if (type === "Q8_0") out[b * 32 + j] = data.readInt8(at + 2 + j) * d;
      else {
        const byte = data[at + 2 + (j % 16)];
        out[b * 32 + j] = ((j < 16 ? byte & 15 : byte >> 4) - 8) * d;
      }
    }
  }
  return out;
}

describe("a checkpoint written as GGUF", () => {
  const spec: RandomCheckpointSpec = { ...TINY_LLAMA, seed: 7 }; // 4 layers, 4 heads over 2 KV heads, vocab 300
  let checkpoint: Checkpoint;
  const files = new Map<GgufFileType, ParsedGguf>();

  beforeAll(async () => {
    await writeRandomCheckpoint(join(root, "tiny"), spec);
    checkpoint = await loadCheckpoint(join(root, "tiny"));
    for (const fileType of ["F32", "Q8_0", "Q4_0"] as const) {
      const path = join(root, `tiny-${fileType}.gguf`);
      await writeCheckpointGguf(checkpoint, path, { fileType });
      files.set(fileType, readGguf(path));
    }
  });

  it("is GGUF v3 with the llama metadata llama.cpp needs", () => {
    const { version, metadata } = files.get("F32")!;
    expect(version).toBe(3);
    expect(Object.fromEntries([...metadata].filter(([key]) => !key.startsWith("tokenizer.ggml.t")))).toEqual({
      "general.architecture": "llama",
      "general.type": "model",
      "general.name": "tiny",
      "general.file_type": 0,
      "general.quantization_version": 2,
      "general.alignment": 32,
      "llama.vocab_size": 300,
      "llama.context_length": 2048,
      "llama.embedding_length": 64,
      "llama.block_count": 4,
      "llama.feed_forward_length": 112,
      "llama.attention.head_count": 4,
      "llama.attention.head_count_kv": 2,
      "llama.attention.key_length": 16,
      "llama.attention.value_length": 16,
      "llama.attention.layer_norm_rms_epsilon": Math.fround(1e-6),
      "llama.rope.freq_base": 10000,
      "llama.rope.dimension_count": 16,
      "tokenizer.ggml.model": "gpt2",
      "tokenizer.ggml.pre": "gpt-2",
      "tokenizer.ggml.merges": [],
      "tokenizer.ggml.bos_token_id": 0,
      "tokenizer.ggml.eos_token_id": 1,
      "tokenizer.ggml.add_bos_token": false,
    });
    expect(files.get("Q8_0")!.metadata.get("general.file_type")).toBe(7);
    expect(files.get("Q4_0")!.metadata.get("general.file_type")).toBe(2);
  });

  it("lists every token by id, padding the vocabulary past tokenizer.json with unused tokens", () => {
    const { metadata } = files.get("F32")!;
    const tokens = metadata.get("tokenizer.ggml.tokens") as string[];
    const types = metadata.get("tokenizer.ggml.token_type") as number[];
    expect(tokens).toHaveLength(300);
    expect([tokens[0], tokens[1], tokens[2 + 0x41], tokens[2 + 0x20]]).toEqual([
      "<|bos|>",
      "<|endoftext|>",
      "A",
      "Ġ",
    ]);
    expect([types[0], types[1], types[2]]).toEqual([
      TOKEN_TYPE.CONTROL,
      TOKEN_TYPE.CONTROL,
      TOKEN_TYPE.NORMAL,
    ]);
    expect([tokens[258], types[258], tokens[299], types[299]]).toEqual([
      "[PAD258]",
      TOKEN_TYPE.UNUSED,
      "[PAD299]",
      TOKEN_TYPE.UNUSED,
    ]);
  });

  it("names and shapes the tensors as llama.cpp does, innermost dimension first", () => {
    const { tensors } = files.get("F32")!;
    expect([...tensors.keys()].slice(0, 10)).toEqual([
      "token_embd.weight",
      "blk.0.attn_norm.weight",
      "blk.0.attn_q.weight",
      "blk.0.attn_k.weight",
      "blk.0.attn_v.weight",
      "blk.0.attn_output.weight",
      "blk.0.ffn_norm.weight",
      "blk.0.ffn_gate.weight",
      "blk.0.ffn_up.weight",
      "blk.0.ffn_down.weight",
    ]);
    expect([...tensors.keys()].slice(-2)).toEqual(["output_norm.weight", "output.weight"]);
    expect(tensors.size).toBe(1 + 4 * 9 + 2);
    expect(tensors.get("token_embd.weight")!.ne).toEqual([64, 300]);
    expect(tensors.get("blk.3.attn_k.weight")!.ne).toEqual([64, 32]);
    expect(tensors.get("blk.3.ffn_down.weight")!.ne).toEqual([112, 64]);
    expect(tensors.get("blk.3.ffn_norm.weight")!.ne).toEqual([64]);
  });

  it("types: norms F32; matrices the file type, but a Q4_0 file's LM head Q8_0", () => {
    const typeOf = (fileType: GgufFileType, name: string) => files.get(fileType)!.tensors.get(name)!.type;
    for (const fileType of ["F32", "Q8_0", "Q4_0"] as const) {
      expect(typeOf(fileType, "blk.0.attn_norm.weight")).toBe(GGML_TYPE.F32);
      expect(typeOf(fileType, "output_norm.weight")).toBe(GGML_TYPE.F32);
      expect(typeOf(fileType, "blk.1.attn_q.weight")).toBe(GGML_TYPE[fileType]);
      expect(typeOf(fileType, "token_embd.weight")).toBe(GGML_TYPE[fileType]);
    }
    expect(typeOf("Q8_0", "output.weight")).toBe(GGML_TYPE.Q8_0);
    expect(typeOf("Q4_0", "output.weight")).toBe(GGML_TYPE.Q8_0);
  });

  it("aligns every tensor to 32 bytes and ends with the last padded tensor", () => {
    for (const file of files.values()) {
      expect(file.dataStart % 32).toBe(0);
      for (const { offset } of file.tensors.values()) expect(offset % 32).toBe(0);
      const last = [...file.tensors.values()].at(-1)!;
      const type = Object.entries(GGML_TYPE).find(([, id]) => id === last.type)![0] as GgmlTypeName;
      const lastBytes = encodedBytes(type, last.ne[0] * (last.ne[1] ?? 1));
      expect(file.bytes.length).toBe(file.dataStart + Math.ceil((last.offset + lastBytes) / 32) * 32);
    }
  });

  it("holds the checkpoint's weights: exactly in F32, q and k rows interleaved per head", () => {
    const file = files.get("F32")!;
    const w = checkpoint.weights;
    expect(tensorValues(file, "token_embd.weight")).toEqual(w.embedTokens.data);
    expect(tensorValues(file, "blk.2.attn_v.weight")).toEqual(w.layers[2].vProj.data);
    expect(tensorValues(file, "blk.2.ffn_down.weight")).toEqual(w.layers[2].downProj!.data);
    expect(tensorValues(file, "output.weight")).toEqual(w.lmHead.data);
    expect(tensorValues(file, "blk.2.attn_q.weight")).toEqual(
      interleaveRopeHalves(w.layers[2].qProj.data, 64, 16),
    );
    expect(tensorValues(file, "blk.2.attn_k.weight")).toEqual(
      interleaveRopeHalves(w.layers[2].kProj.data, 64, 16),
    );
  });

  it("holds them within half a quantization step in Q8_0 and Q4_0 (but where Q4_0 clips)", () => {
    const original = checkpoint.weights.layers[1].upProj!.data;
    for (const [fileType, steps] of [
      ["Q8_0", 127],
      ["Q4_0", 8],
    ] as const) {
      const decoded = tensorValues(files.get(fileType)!, "blk.1.ffn_up.weight");
      for (let b = 0; b < original.length / 32; b++) {
        const values = original.subarray(b * 32, b * 32 + 32);
        const extreme = values.reduce((m, v) => (Math.abs(v) > Math.abs(m) ? v : m), 0);
        const step = Math.abs(extreme) / steps;
        // The fp16 scale is off by up to 2^-11 of itself, over up to `steps` steps.
        const slack = steps * step * 2 ** -11 + 1e-7;
        for (let j = 0; j < 32; j++) {
          const x = values[j];
          // Q4_0 reaches 7 steps on the side opposite its extreme, 8 on the extreme's side.
          const clipped =
            fileType === "Q4_0" && Math.sign(x) !== Math.sign(extreme) && Math.abs(x) > 7.5 * step;
          const bound = clipped ? Math.abs(x) - 7 * step : step / 2;
          expect(Math.abs(decoded[b * 32 + j] - x)).toBeLessThanOrEqual(bound + slack);
        }
      }
    }
  });

  it("with tied embeddings has no output.weight, and token_embd is the LM head's type", async () => {
    const dir = join(root, "tied");
    await writeRandomCheckpoint(dir, { ...spec, tieWordEmbeddings: true });
    const summary = await writeCheckpointGguf(await loadCheckpoint(dir), join(root, "tied.gguf"), {
      fileType: "Q4_0",
    });
    const types = Object.fromEntries(summary.tensors.map((t) => [t.name, t.type]));
    expect(types["output.weight"]).toBeUndefined();
    expect(types["token_embd.weight"]).toBe("Q8_0");
    expect(types["blk.0.attn_q.weight"]).toBe("Q4_0");
    const pure = await writeCheckpointGguf(await loadCheckpoint(dir), join(root, "tied-pure.gguf"), {
      fileType: "Q4_0",
      pure: true,
    });
    expect(pure.tensors.find((t) => t.name === "token_embd.weight")!.type).toBe("Q4_0");
    expect(statSync(join(root, "tied-pure.gguf")).size).toBeLessThan(statSync(join(root, "tied.gguf")).size);
  });

  it("refuses other families by name", async () => {
    const dir = join(root, "qwen2");
    await writeRandomCheckpoint(dir, { ...spec, architecture: "qwen2" });
    await expect(
      writeCheckpointGguf(await loadCheckpoint(dir), join(root, "qwen2.gguf"), { fileType: "F32" }),
    ).rejects.toThrow(
      new UnsupportedError(
        "GGUF export: architecture qwen2 is not written; only the Llama family (llama, mistral)",
      ),
    );
  });
});

// ── llama.cpp on the same weights ────────────────────────────────────────────────────

/** node-llama-cpp's directory, or why it cannot be had (an offline machine cannot install it). */
const nodeLlamaCpp = (() => {
  try {
    return { dir: ensureNodeLlamaCpp(), reason: "" };
  } catch (error) {
    return { dir: undefined, reason: (error as Error).message.split("\n")[0] };
  }
})();

/** Tandem's fp32 engine on a checkpoint: the whole model as one segment, greedy, its own KV cache. */
async function tandemGreedy(
  dir: string,
  prompt: readonly number[],
  count: number,
): Promise<{ tokens: number[]; firstLogits: Float32Array }> {
  const checkpoint = await loadCheckpoint(dir);
  const spec = segmentSpec({
    fromLayer: 0,
    toLayer: checkpoint.config.numLayers,
    finalHead: true,
    weightFormat: "fp32",
    logits: true,
  });
  const model = await SegmentModel.load(checkpoint, spec, { threads: 1 });
  try {
    const sessions = new SegmentSessions(model);
    sessions.open("greedy");
    let step = await sessions.forward("greedy", { ids: [...prompt] });
    const firstLogits = step.exits[0].logits!;
    const tokens = [step.exits[0].token[0]];
    while (tokens.length < count) {
      step = await sessions.forward("greedy", { ids: [tokens[tokens.length - 1]] });
      tokens.push(step.exits[0].token[0]);
    }
    return { tokens, firstLogits };
  } finally {
    await model.release();
  }
}

/** llama.cpp on the checkpoint written as GGUF of `fileType`, greedy. */
async function llamaCppGreedyOn(
  dir: string,
  fileType: GgufFileType,
  prompt: readonly number[],
  count: number,
): Promise<{ tokens: number[]; firstLogits: Float32Array }> {
  const path = join(root, `${basename(dir)}-${fileType}.gguf`);
  await writeCheckpointGguf(await loadCheckpoint(dir), path, { fileType });
  // F32 keys and values and no flash attention (llama.cpp's CPU flash attention works
  // in fp16): llama.cpp's arithmetic is then fp32 throughout, like Tandem's.
  const model = await LlamaCppModel.open({
    ggufPath: path,
    threads: 1,
    contextSize: prompt.length + count + 1,
    kvCacheType: "F32",
    flashAttention: false,
    packageDir: nodeLlamaCpp.dir,
  });
  try {
    return await llamaCppGreedy(model, prompt, count);
  } finally {
    await model.close();
  }
}

/** The largest difference between two logit vectors. */
const worstDifference = (a: Float32Array, b: Float32Array) =>
  Math.max(...a.map((v, i) => Math.abs(v - b[i])));

describe.skipIf(!nodeLlamaCpp.dir)(
  `llama.cpp on a checkpoint written as GGUF computes what Tandem's engine does${nodeLlamaCpp.dir ? "" : ` (skipped: node-llama-cpp not installable: ${nodeLlamaCpp.reason})`}`,
  () => {
    const prompt = Array.from({ length: 16 }, (_, i) => (i * 7919 + 13) % 4096);
    const greedySteps = 16;
    let tandem: { tokens: number[]; firstLogits: Float32Array };

    /** Root-mean-square difference of two logit vectors. */
    const rms = (a: Float32Array, b: Float32Array) =>
      Math.sqrt(a.reduce((sum, v, i) => sum + (v - b[i]) ** 2, 0) / a.length);

    beforeAll(async () => {
      tandem = await tandemGreedy(DEMO_MODEL, prompt, greedySteps);
    });

    const runGguf = async (fileType: GgufFileType) =>
      llamaCppGreedyOn(DEMO_MODEL, fileType, prompt, greedySteps);

    it("F32: the same 16 greedy tokens, and the first position's logits within 1e-3", async () => {
      const llamaCpp = await runGguf("F32");
      expect(llamaCpp.tokens).toEqual(tandem.tokens);
      expect(worstDifference(llamaCpp.firstLogits, tandem.firstLogits)).toBeLessThan(1e-3);
    });

    it("Q8_0 and Q4_0: the same first token, logits off by quantization only", async () => {
      // Logits of this model spread over ~±9; a misread block layout would move them by
      // whole units. Measured: rms 0.03 (Q8_0), 0.11 (Q4_0).
      for (const [fileType, bound] of [
        ["Q8_0", 0.1],
        ["Q4_0", 0.3],
      ] as const) {
        const llamaCpp = await runGguf(fileType);
        expect(llamaCpp.tokens[0]).toBe(tandem.tokens[0]);
        expect(rms(llamaCpp.firstLogits, tandem.firstLogits)).toBeLessThan(bound);
      }
    });

    it("llama3 rope scaling: rope_freqs makes llama.cpp rotate by Tandem's scaled frequencies", async () => {
      // Pre-trained context 32: over a 48-token prompt every band of the scaling is in play
      // (wavelengths under 8 kept, over 32 divided by the factor, the band between blended).
      const scaled: RandomCheckpointSpec = {
        ...TINY_LLAMA,
        seed: 21,
        ropeScaling: {
          type: "llama3",
          factor: 8,
          lowFreqFactor: 1,
          highFreqFactor: 4,
          originalMaxPositions: 32,
        },
      };
      await writeRandomCheckpoint(join(root, "llama3-scaled"), scaled);
      await writeRandomCheckpoint(join(root, "unscaled"), { ...scaled, ropeScaling: undefined });
      const longPrompt = Array.from({ length: 48 }, (_, i) => (i * 7919 + 13) % TINY_LLAMA.vocabSize);
      const tandemScaled = await tandemGreedy(join(root, "llama3-scaled"), longPrompt, 1);
      const tandemUnscaled = await tandemGreedy(join(root, "unscaled"), longPrompt, 1);
      const llamaCpp = await llamaCppGreedyOn(join(root, "llama3-scaled"), "F32", longPrompt, 1);
      const agreement = worstDifference(llamaCpp.firstLogits, tandemScaled.firstLogits);
      expect(agreement).toBeLessThan(1e-3);
      // The scaling moves these logits far more than the engines differ: the check has teeth.
      expect(worstDifference(tandemUnscaled.firstLogits, tandemScaled.firstLogits)).toBeGreaterThan(
        20 * agreement,
      );
    });
  },
);
