/**
 * `inspectCheckpoint` reads what a checkpoint holds without loading it: real models' full
 * shapes (their own config.json, a real safetensors header over a sparse file, so a 724 MB
 * model costs nothing to write) and small random checkpoints; for a checkpoint Tandem
 * refuses, the reason loading would give and every fact that could still be read.
 */
import {
  closeSync,
  ftruncateSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  rmSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { CheckpointError, InvalidArgumentError } from "@tandem/common";
import { cloudSegmentSpec, edgeSegmentSpec } from "../graph/deployment-specs.ts";
import { segmentSpec } from "../graph/segment-spec.ts";
import { kvBytesPerPosition, segmentWeightBytes } from "../graph/segment-weight-bytes.ts";
import {
  ODD_HIDDEN,
  parameterCount,
  TINY_LLAMA,
  TINY_QWEN2,
  writeRandomCheckpoint,
  writeRandomExitAdapters,
} from "../testing/random-checkpoint.ts";
import { REAL_MODEL_CONFIGS, type RealModelName } from "../testing/real-model-configs.ts";
import { parseModelConfig } from "./config-parser.ts";
import { inspectCheckpoint, representativeSplits, RSS_ALLOWANCE_BYTES } from "./inspect-checkpoint.ts";
import { expectedTensors } from "./load-checkpoint.ts";

const workDir = mkdtempSync(join(tmpdir(), "tandem-inspect-"));
afterAll(() => rmSync(workDir, { recursive: true, force: true }));

let counter = 0;
const newDir = (name: string) => join(workDir, `${counter++}-${name}`);

interface HeaderOnlyOptions {
  /** Leave this tensor out. */
  drop?: string;
  /** Give this tensor another shape. */
  reshape?: { name: string; shape: number[] };
}

/**
 * A real model's config.json (every key as published) and a BF16 model.safetensors of
 * its full shape whose data section is a hole: valid for every header check.
 */
function writeHeaderOnlyCheckpoint(name: RealModelName, options: HeaderOnlyOptions = {}): string {
  const dir = newDir(name);
  mkdirSync(dir);
  const configJson = REAL_MODEL_CONFIGS[name];
  writeFileSync(join(dir, "config.json"), JSON.stringify(configJson));
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const tensor of expectedTensors(parseModelConfig(configJson, name))) {
    if (tensor.name === options.drop) continue;
    const shape = tensor.name === options.reshape?.name ? options.reshape.shape : tensor.shape;
    const bytes = 2 * shape.reduce((a, b) => a * b, 1);
    header[tensor.name] = { dtype: "BF16", shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  const headerBytes = Buffer.from(JSON.stringify(header));
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(headerBytes.length));
  const fd = openSync(join(dir, "model.safetensors"), "w");
  writeSync(fd, prefix);
  writeSync(fd, headerBytes);
  ftruncateSync(fd, 8 + headerBytes.length + offset);
  closeSync(fd);
  return dir;
}

function writeJson(path: string, value: unknown): void {
  writeFileSync(path, JSON.stringify(value));
}

describe("inspectCheckpoint: real models' shapes", () => {
  it("SmolLM2-360M: family, shape, parameters, files, and exact segment bytes per split and format", async () => {
    const dir = writeHeaderOnlyCheckpoint("SmolLM2-360M");
    const inspection = await inspectCheckpoint(dir);
    expect(inspection).toMatchObject({
      family: "llama",
      architectures: ["LlamaForCausalLM"],
      supported: true,
      reasons: [],
      shape: {
        hiddenSize: 960,
        numLayers: 32,
        numHeads: 15,
        numKvHeads: 5,
        headDim: 64,
        intermediateSize: 2560,
        vocabSize: 49152,
        tieWordEmbeddings: true,
        ropeTheta: 100000,
        ropeScaling: "none",
        maxPositions: 8192,
      },
      bosTokenId: 0,
      endTokenIds: [0],
      tokenizer: { tokenizerJson: false, tokenizerConfig: false },
      chatTemplate: {},
    });
    // SmolLM2-360M's published count: 361.82M (the tied head counted once).
    expect(inspection.weights!.parameters).toBe(361_821_120);
    expect(inspection.weights!.dtypes).toEqual([{ dtype: "BF16", tensors: 290, parameters: 361_821_120 }]);
    expect(inspection.weights!.files).toEqual([
      { name: "model.safetensors", bytes: inspection.weights!.bytes, tensors: 290 },
    ]);

    const config = parseModelConfig(REAL_MODEL_CONFIGS["SmolLM2-360M"], "config.json");
    const memory = inspection.memory!;
    expect(memory.contextPositions).toBe(2048);
    expect(memory.formula).toBe("estimated RSS = 1.2 × weight bytes held + KV of 2048 positions + 150 MiB");
    expect(memory.splits.map((s) => `${s.split} ${s.weightFormat}`)).toEqual(
      [8, 16, 24].flatMap((split) => ["fp32", "int8", "w8a8", "int4"].map((format) => `${split} ${format}`)),
    );
    for (const { split, weightFormat, edge, worker } of memory.splits) {
      const edgeBytes = segmentWeightBytes(
        config,
        edgeSegmentSpec(split, [{ afterLayer: split }], weightFormat),
      );
      expect(edge).toEqual({
        fromLayer: 0,
        toLayer: split,
        exitLayers: [split],
        weightFormat,
        weightBytes: edgeBytes.total,
        kvBytesPer1000Positions: 1000 * 2 * split * 5 * 64 * 4,
        // SmolLM2 is tied: in int4 the head is a copy of its own, so the 8-bit table is read
        // on demand; in fp32 and int8 the head multiplies by the table, which is then held.
        estimatedRssBytes:
          1.2 * (edgeBytes.total - (weightFormat === "int4" ? edgeBytes.embedding : 0)) +
          2048 * 2 * split * 5 * 64 * 4 +
          150 * 2 ** 20,
      });
      const workerBytes = segmentWeightBytes(config, cloudSegmentSpec(split, 32, weightFormat)).total;
      expect(worker).toMatchObject({
        fromLayer: split,
        toLayer: 32,
        exitLayers: [32],
        weightBytes: workerBytes,
      });
    }
    // The figures, to the byte: the edge's half in int4 holds the embedding table in 8 bits
    // (a byte per value and an fp32 scale per block of 32), an int4 copy of the tied head,
    // 16 int4 layers (4 bits and an fp32 scale per 32 values) and the rotary caches.
    const edgeInt4 = memory.splits.find((s) => s.split === 16 && s.weightFormat === "int4")!.edge;
    const int4 = (rows: number, cols: number, blockSize = 32) => rows * cols * (0.5 + 4 / blockSize);
    const layers = (blockSize = 32) =>
      16 *
      (2 * 960 * 4 +
        int4(960 + 2 * 320, 960, blockSize) +
        int4(960, 960, blockSize) +
        int4(2 * 2560, 960, blockSize) +
        int4(960, 2560, blockSize));
    const table = (blockSize = 32) => 49152 * 960 * (1 + 4 / blockSize);
    expect(edgeInt4.weightBytes).toBe(table() + 8192 * 64 * 4 + layers() + 960 * 4 + int4(49152, 960));
    expect(memory.wholeModel.map((w) => w.weightFormat)).toEqual(["fp32", "int8", "w8a8", "int4"]);

    // Asked for an 8-bit head, the edge's int4 head multiplies by the tied table, which it
    // then holds, and keeps no copy of its own; a block size of 64 halves every scale.
    const eightBitHead = await inspectCheckpoint(dir, {
      splits: [16],
      weightFormats: ["int4"],
      quantization: { int4HeadBits: 8, quantBlockSize: 64 },
    });
    const edge = eightBitHead.memory!.splits[0].edge;
    expect(edge.weightBytes).toBe(table(64) + 8192 * 64 * 4 + layers(64) + 960 * 4);
    expect(edge.estimatedRssBytes).toBe(1.2 * edge.weightBytes + 2048 * 2 * 16 * 5 * 64 * 4 + 150 * 2 ** 20);
    // The whole model's row is quantized as asked too.
    const wholeAt64 = segmentWeightBytes(
      config,
      segmentSpec({ fromLayer: 0, toLayer: 32, finalHead: true, weightFormat: "int4", quantBlockSize: 64 }),
    ).total;
    expect(eightBitHead.memory!.wholeModel[0].weightBytes).toBe(wholeAt64);
    expect(wholeAt64).toBeLessThan(memory.wholeModel[3].weightBytes);
  });

  it("Llama-3.2-1B: llama3 rope scaling, described with its parameters; end tokens of generation_config.json too", async () => {
    const dir = writeHeaderOnlyCheckpoint("Llama-3.2-1B");
    // Llama 3.2's generation_config.json: generation also stops at <|eom_id|> and <|eot_id|>.
    writeJson(join(dir, "generation_config.json"), {
      bos_token_id: 128000,
      eos_token_id: [128001, 128008, 128009],
    });
    const inspection = await inspectCheckpoint(dir, {
      splits: [8],
      weightFormats: ["int4"],
      contextPositions: 4096,
    });
    expect(inspection.supported).toBe(true);
    expect(inspection.shape.ropeScaling).toBe(
      "llama3, factor 32, low_freq_factor 1, high_freq_factor 4, original context 8192",
    );
    expect(inspection.weights!.parameters).toBe(1_235_814_400);
    expect(inspection.endTokenIds).toEqual([128001, 128008, 128009]);
    const [row] = inspection.memory!.splits;
    expect(row).toMatchObject({ split: 8, weightFormat: "int4" });
    // Tied, int4: the 8-bit table (128256 rows of 64 blocks of 32 bytes and a scale) is read on demand.
    expect(row.edge.estimatedRssBytes).toBe(
      1.2 * (row.edge.weightBytes - 128256 * 64 * (32 + 4)) +
        4096 * kvBytesPerPosition(parseModelConfig(REAL_MODEL_CONFIGS["Llama-3.2-1B"], "c"), 8) +
        RSS_ALLOWANCE_BYTES,
    );
  });

  it("Qwen3-0.6B: the qwen3 family, head_dim 128 independent of hidden 1024", async () => {
    const inspection = await inspectCheckpoint(writeHeaderOnlyCheckpoint("Qwen3-0.6B"), { splits: [14] });
    expect(inspection).toMatchObject({
      family: "qwen3",
      supported: true,
      shape: { hiddenSize: 1024, numHeads: 16, numKvHeads: 8, headDim: 128, numLayers: 28 },
    });
  });

  it("a missing or mis-shaped tensor: not supported, named as loading names it; the estimates are still made", async () => {
    const missing = await inspectCheckpoint(
      writeHeaderOnlyCheckpoint("TinyLlama-1.1B", { drop: "model.layers.21.mlp.down_proj.weight" }),
      { splits: [11] },
    );
    expect(missing.supported).toBe(false);
    expect(missing.reasons).toEqual([
      expect.stringMatching(
        /model\.safetensors: tensor "model\.layers\.21\.mlp\.down_proj\.weight" is missing$/,
      ),
    ]);
    // One split, each format.
    expect(missing.memory!.splits).toHaveLength(4);
    expect(missing.weights!.parameters).toBeGreaterThan(1e9);

    const misShaped = await inspectCheckpoint(
      writeHeaderOnlyCheckpoint("TinyLlama-1.1B", {
        reshape: { name: "lm_head.weight", shape: [32001, 2048] },
      }),
    );
    expect(misShaped.reasons).toEqual([
      expect.stringMatching(/tensor "lm_head\.weight" has shape \[32001, 2048\], expected \[32000, 2048\]$/),
    ]);
  });
});

describe("inspectCheckpoint: random checkpoints", () => {
  it("a sharded checkpoint: every shard, the parameters of the spec, tokenizer and BOS behaviour, chat template", async () => {
    const dir = newDir("qwen2");
    await writeRandomCheckpoint(dir, { ...TINY_QWEN2, shards: 2, dtype: "F16" });
    writeJson(join(dir, "tokenizer_config.json"), {
      add_bos_token: true,
      bos_token: "<|bos|>",
      chat_template: "{% for m in messages %}{{ m.content }}{% endfor %}",
    });
    const inspection = await inspectCheckpoint(dir);
    expect(inspection).toMatchObject({
      family: "qwen2",
      supported: true,
      weights: {
        files: [{ name: "model-00001-of-00002.safetensors" }, { name: "model-00002-of-00002.safetensors" }],
        parameters: parameterCount(TINY_QWEN2),
        dtypes: [{ dtype: "F16", parameters: parameterCount(TINY_QWEN2) }],
      },
      tokenizer: {
        tokenizerJson: true,
        tokenizerConfig: true,
        vocabSize: 258,
        promptPrefix: ["<|bos|>"],
        promptSuffix: [],
      },
      chatTemplate: { source: "tokenizer_config.json" },
    });
    // 4 layers: L/4, L/2 and 3L/4 are 1, 2 and 3.
    expect(inspection.memory!.splits.map((s) => s.split)).toEqual([1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]);
  });

  it("a head size that is no multiple of 16 (12) is supported", async () => {
    const dir = newDir("odd");
    await writeRandomCheckpoint(dir, ODD_HIDDEN);
    const inspection = await inspectCheckpoint(dir, { splits: [2], weightFormats: ["fp32"] });
    expect(inspection).toMatchObject({
      supported: true,
      shape: { headDim: 12 },
    });
    expect(inspection.tokenizer).toMatchObject({ promptPrefix: [], promptSuffix: [] });
  });

  it("the edge's exits are tandem.json's within its layers, else one at the split", async () => {
    const dir = newDir("deployed");
    await writeRandomCheckpoint(dir, TINY_LLAMA);
    writeJson(join(dir, "tandem.json"), { exit_layers: [1, 2], recommended_split: 2 });
    const inspection = await inspectCheckpoint(dir, { weightFormats: ["fp32"] });
    expect(inspection.deployment).toEqual({ exitLayers: [1, 2], recommendedSplit: 2 });
    expect(inspection.memory!.splits.map((s) => [s.split, s.edge.exitLayers])).toEqual([
      [1, [1]],
      [2, [1, 2]],
      [3, [1, 2]],
    ]);
    const config = parseModelConfig(JSON.parse(readFileSync(join(dir, "config.json"), "utf8")), "c");
    expect(inspection.memory!.wholeModel[0].weightBytes).toBe(
      segmentWeightBytes(config, segmentSpec({ fromLayer: 0, toLayer: 4, finalHead: true })).total,
    );
  });

  it("exit adapters: their widths, in the edge's bytes; a broken adapters file is the reason it does not run", async () => {
    const dir = newDir("adapters");
    await writeRandomCheckpoint(dir, TINY_LLAMA);
    await writeRandomExitAdapters(dir, TINY_LLAMA, { layers: [1, 2], width: 24, seed: 4 });
    const inspection = await inspectCheckpoint(dir, { weightFormats: ["int8"], splits: [2] });
    expect(inspection.supported).toBe(true);
    expect(inspection.deployment).toEqual({
      exitLayers: [1, 2],
      recommendedSplit: 2,
      exitAdapterWidths: { "1": 24, "2": 24 },
    });
    const config = parseModelConfig(JSON.parse(readFileSync(join(dir, "config.json"), "utf8")), "c");
    const edgeSpec = edgeSegmentSpec(2, [{ afterLayer: 1 }, { afterLayer: 2 }], "int8");
    const [{ edge, worker }] = inspection.memory!.splits;
    expect(edge.weightBytes).toBe(
      segmentWeightBytes(
        config,
        edgeSpec,
        new Map([
          [1, 24],
          [2, 24],
        ]),
      ).total,
    );
    expect(edge.weightBytes).toBeGreaterThan(segmentWeightBytes(config, edgeSpec).total);
    expect(worker.weightBytes).toBe(segmentWeightBytes(config, cloudSegmentSpec(2, 4, "int8")).total);

    writeFileSync(join(dir, "exit-adapters.safetensors"), "not safetensors");
    const broken = await inspectCheckpoint(dir, { weightFormats: ["int8"], splits: [2] });
    expect(broken.supported).toBe(false);
    expect(broken.reasons.join("\n")).toMatch(/exit-adapters\.safetensors: /);
  });
});

describe("inspectCheckpoint: what Tandem does not run", () => {
  it("another family: the parser's reason, the facts config.json and the headers give, no estimates", async () => {
    const dir = newDir("gpt2");
    await writeRandomCheckpoint(dir, TINY_LLAMA);
    writeJson(join(dir, "config.json"), {
      architectures: ["GPT2LMHeadModel"],
      model_type: "gpt2",
      n_embd: 768,
      n_layer: 12,
      vocab_size: 50257,
      bos_token_id: 50256,
      eos_token_id: 50256,
    });
    const inspection = await inspectCheckpoint(dir);
    expect(inspection).toMatchObject({
      family: "gpt2",
      architectures: ["GPT2LMHeadModel"],
      supported: false,
      reasons: [
        expect.stringMatching(/config\.json: "model_type" "gpt2" is not supported \(supported: llama, /),
      ],
      shape: { vocabSize: 50257, hiddenSize: undefined },
      weights: { parameters: parameterCount(TINY_LLAMA) },
      bosTokenId: 50256,
      endTokenIds: [50256],
      tokenizer: { tokenizerJson: true },
    });
    expect(inspection.memory).toBeUndefined();
  });

  it("rope_scaling of a type not built: refused by name, the shape still read", async () => {
    const dir = newDir("yarn");
    await writeRandomCheckpoint(dir, TINY_LLAMA);
    const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
    writeJson(join(dir, "config.json"), { ...config, rope_scaling: { rope_type: "yarn", factor: 4 } });
    const inspection = await inspectCheckpoint(dir);
    expect(inspection.supported).toBe(false);
    expect(inspection.reasons).toEqual([
      expect.stringMatching(/"rope_scaling" of type "yarn" is not supported \(supported: linear, llama3\)$/),
    ]);
    expect(inspection.shape).toMatchObject({
      hiddenSize: 64,
      numLayers: 4,
      numHeads: 4,
      numKvHeads: 2,
      headDim: 16,
      ropeScaling: '{"rope_type":"yarn","factor":4}',
    });
  });

  it("no weight file: the reason, and the config's facts and estimates", async () => {
    const dir = newDir("no-weights");
    await writeRandomCheckpoint(dir, TINY_LLAMA);
    rmSync(join(dir, "model.safetensors"));
    const inspection = await inspectCheckpoint(dir, { splits: [2] });
    expect(inspection.reasons).toEqual([
      expect.stringMatching(/has neither model\.safetensors nor model\.safetensors\.index\.json$/),
    ]);
    expect(inspection.weights).toBeUndefined();
    expect(inspection.memory!.splits).toHaveLength(4);
  });

  it("a directory that is not a checkpoint is an error naming config.json; a split outside the model names --split", async () => {
    const empty = newDir("empty");
    mkdirSync(empty);
    await expect(inspectCheckpoint(empty)).rejects.toThrow(CheckpointError);
    await expect(inspectCheckpoint(empty)).rejects.toThrow(/config\.json: cannot be read/);
    const dir = newDir("llama");
    await writeRandomCheckpoint(dir, TINY_LLAMA);
    await expect(inspectCheckpoint(dir, { splits: [4] })).rejects.toThrow(InvalidArgumentError);
    await expect(inspectCheckpoint(dir, { splits: [4] })).rejects.toThrow(
      "split: must be in [1, 3] for this 4-layer model, got 4",
    );
  });
});

describe("representativeSplits", () => {
  it.each([
    [32, undefined, [8, 16, 24]],
    [6, 3, [2, 3, 5]],
    [22, undefined, [6, 11, 17]],
    [2, undefined, [1]],
    [1, undefined, []],
  ])("%i layers, tandem.json split %s: %j", (layers, recommended, splits) => {
    expect(representativeSplits(layers, recommended)).toEqual(splits);
  });
});
