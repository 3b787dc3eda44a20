import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  CheckpointError,
  ConfigError,
  TensorMismatchError,
  TensorMissingError,
  UnsupportedError,
} from "../errors.ts";
import { writeRandomCheckpoint, type RandomCheckpointSpec } from "../testing/random-checkpoint.ts";
import { parseModelConfig } from "./config-parser.ts";
import { loadCheckpoint } from "./load-checkpoint.ts";
import { encodeSafetensors, SafetensorsFile } from "./safetensors.ts";

const root = mkdtempSync(join(tmpdir(), "tandem-checkpoint-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const spec: RandomCheckpointSpec = {
  architecture: "llama",
  vocabSize: 260,
  hiddenSize: 32,
  intermediateSize: 48,
  numLayers: 2,
  numHeads: 2,
  numKvHeads: 1,
  tieWordEmbeddings: false,
  seed: 3,
  dtype: "F32",
};

let counter = 0;
async function checkpointDir(overrides: Partial<RandomCheckpointSpec> = {}): Promise<string> {
  const dir = join(root, `c${counter++}`);
  await writeRandomCheckpoint(dir, { ...spec, ...overrides });
  return dir;
}

/** Rewrites model.safetensors after `edit` changes its header or tensors. */
function rewriteWeights(
  dir: string,
  edit: (header: Record<string, { dtype: string; shape: number[]; data_offsets: number[] }>) => void,
): void {
  const path = join(dir, "model.safetensors");
  const bytes = readFileSync(path);
  const length = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + length).toString("utf8"));
  edit(header);
  const json = Buffer.from(JSON.stringify(header));
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(path, Buffer.concat([prefix, json, bytes.subarray(8 + length)]));
}

describe("safetensors", () => {
  for (const dtype of ["F32", "F16", "BF16"] as const) {
    it(`round-trips ${dtype} tensors within the dtype's rounding`, () => {
      const data = Float32Array.from({ length: 24 }, (_, i) => (i - 12) * 0.173);
      const file = SafetensorsFile.parse(
        "t.safetensors",
        encodeSafetensors([{ name: "w", shape: [4, 6], data }], dtype, { format: "pt" }),
      );
      const back = file.read("w");
      expect(back.shape).toEqual([4, 6]);
      const tolerance = { F32: 0, F16: 2 ** -11, BF16: 2 ** -8 }[dtype];
      back.data.forEach((value, i) =>
        expect(Math.abs(value - data[i])).toBeLessThanOrEqual(Math.abs(data[i]) * tolerance),
      );
      expect(file.metadata).toEqual({ format: "pt" });
    });
  }
});

describe("loadCheckpoint", () => {
  it("loads every tensor with the shapes the config implies", async () => {
    const checkpoint = await loadCheckpoint(await checkpointDir());
    expect(checkpoint.config).toMatchObject({
      architecture: "llama",
      hiddenSize: 32,
      numKvHeads: 1,
      headDim: 16,
    });
    expect(checkpoint.weights.layers).toHaveLength(2);
    expect(checkpoint.weights.layers[1].kProj.shape).toEqual([16, 32]);
    expect(checkpoint.weights.lmHead).not.toBe(checkpoint.weights.embedTokens);
    expect(checkpoint.weightsHash).toMatch(/^[0-9a-f]{64}$/);
    expect(checkpoint.tokenizerPath).toBeDefined();
  });

  it("gives the same weights from F32, F16, BF16 and sharded files, and ties embeddings", async () => {
    const f32 = await loadCheckpoint(await checkpointDir());
    const f16 = await loadCheckpoint(await checkpointDir({ dtype: "F16", shards: 2 }));
    const bf16 = await loadCheckpoint(await checkpointDir({ dtype: "BF16", shards: 3 }));
    const a = f32.weights.layers[0].qProj.data;
    f16.weights.layers[0].qProj.data.forEach((v, i) =>
      expect(Math.abs(v - a[i])).toBeLessThanOrEqual(Math.abs(a[i]) * 2 ** -11 + 1e-7),
    );
    bf16.weights.layers[0].qProj.data.forEach((v, i) =>
      expect(Math.abs(v - a[i])).toBeLessThanOrEqual(Math.abs(a[i]) * 2 ** -8 + 1e-7),
    );
    expect(f16.weightsHash).not.toBe(f32.weightsHash);
    const tied = await loadCheckpoint(await checkpointDir({ tieWordEmbeddings: true }));
    expect(tied.weights.lmHead).toBe(tied.weights.embedTokens);
  });

  it("loads qwen2 biases and mixtral experts", async () => {
    const qwen = await loadCheckpoint(await checkpointDir({ architecture: "qwen2" }));
    expect(qwen.weights.layers[0].qBias?.shape).toEqual([32]);
    const mixtral = await loadCheckpoint(
      await checkpointDir({ architecture: "mixtral", numExperts: 4, numExpertsPerToken: 2 }),
    );
    expect(mixtral.config.numExperts).toBe(4);
    expect(mixtral.weights.layers[0].experts).toHaveLength(4);
    expect(mixtral.weights.layers[0].router?.shape).toEqual([4, 32]);
  });

  it("names the file and tensor when a tensor is missing", async () => {
    const dir = await checkpointDir();
    rewriteWeights(dir, (header) => delete header["model.layers.1.mlp.up_proj.weight"]);
    const error = await loadCheckpoint(dir).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TensorMissingError);
    expect(String(error)).toMatch(/model\.safetensors.*model\.layers\.1\.mlp\.up_proj\.weight/);
  });

  it("names the file and tensor when a shape does not match the config", async () => {
    const dir = await checkpointDir();
    rewriteWeights(dir, (header) => (header["model.layers.0.self_attn.q_proj.weight"].shape = [16, 64]));
    const error = await loadCheckpoint(dir).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TensorMismatchError);
    expect(String(error)).toMatch(/q_proj\.weight.*shape \[16, 64\], expected \[32, 32\]/);
  });

  it("rejects a truncated file, a corrupt header and an unsupported dtype", async () => {
    const truncated = await checkpointDir();
    truncateSync(join(truncated, "model.safetensors"), 5000);
    await expect(loadCheckpoint(truncated)).rejects.toThrow(/model\.safetensors.*(truncated|exceeds)/);

    const corrupt = await checkpointDir();
    const bytes = readFileSync(join(corrupt, "model.safetensors"));
    bytes.write("#", 8); // the opening brace of the JSON header
    writeFileSync(join(corrupt, "model.safetensors"), bytes);
    await expect(loadCheckpoint(corrupt)).rejects.toThrow(CheckpointError);

    const int64 = await checkpointDir();
    rewriteWeights(int64, (header) => {
      const entry = header["model.norm.weight"];
      entry.dtype = "I64";
      entry.shape = [entry.shape[0] / 2];
    });
    const error = await loadCheckpoint(int64).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UnsupportedError);
    expect(String(error)).toMatch(/model\.norm\.weight.*I64/);
  });

  it("rejects non-finite weights, naming the tensor", async () => {
    const dir = await checkpointDir();
    const path = join(dir, "model.safetensors");
    const bytes = readFileSync(path);
    const length = Number(bytes.readBigUInt64LE(0));
    const header = JSON.parse(bytes.subarray(8, 8 + length).toString("utf8"));
    const [begin] = header["model.norm.weight"].data_offsets as number[];
    bytes.writeFloatLE(NaN, 8 + length + begin + 4);
    writeFileSync(path, bytes);
    await expect(loadCheckpoint(dir)).rejects.toThrow(/model\.norm\.weight.*non-finite/);
  });

  it("names config.json and the key when the config is incomplete", async () => {
    const dir = await checkpointDir();
    const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
    delete config.hidden_size;
    writeFileSync(join(dir, "config.json"), JSON.stringify(config));
    const error = await loadCheckpoint(dir).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConfigError);
    expect(String(error)).toMatch(/config\.json.*"hidden_size" is missing/);
  });

  it("says which files are missing from an empty directory", async () => {
    await expect(loadCheckpoint(join(root, "nothing-here"))).rejects.toThrow(/config\.json/);
  });
});

describe("parseModelConfig", () => {
  const minimal = {
    model_type: "llama",
    vocab_size: 10,
    hidden_size: 64,
    intermediate_size: 128,
    num_hidden_layers: 2,
    num_attention_heads: 4,
  };

  it("applies transformers' defaults", () => {
    const config = parseModelConfig(minimal, "config.json");
    expect(config).toMatchObject({
      numKvHeads: 4,
      headDim: 16,
      ropeTheta: 10000,
      rmsNormEps: 1e-6,
      tieWordEmbeddings: false,
      attentionBias: false,
    });
    expect(parseModelConfig({ ...minimal, model_type: "qwen2" }, "config.json").attentionBias).toBe(true);
    expect(parseModelConfig({ ...minimal, eos_token_id: [2, 3] }, "config.json").eosTokenId).toEqual([2, 3]);
  });

  const bad: [string, Record<string, unknown>, RegExp][] = [
    ["unknown model type", { ...minimal, model_type: "gpt2" }, /"model_type" "gpt2" is not supported/],
    ["kv heads not dividing heads", { ...minimal, num_key_value_heads: 3 }, /"num_key_value_heads"/],
    ["ill-typed size", { ...minimal, hidden_size: "64" }, /"hidden_size" must be a positive integer/],
    ["odd head dim", { ...minimal, head_dim: 15 }, /"head_dim" must be even/],
    ["other activation", { ...minimal, hidden_act: "gelu" }, /"hidden_act"/],
  ];
  for (const [name, json, message] of bad) {
    it(`rejects ${name}`, () => expect(() => parseModelConfig(json, "config.json")).toThrow(message));
  }
  it("rejects rope scaling it does not implement", () => {
    expect(() =>
      parseModelConfig({ ...minimal, rope_scaling: { type: "linear", factor: 2 } }, "config.json"),
    ).toThrow(UnsupportedError);
  });
});
