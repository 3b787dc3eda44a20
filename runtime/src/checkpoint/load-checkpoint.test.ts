import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  CheckpointError,
  ModelConfigError,
  TandemError,
  TensorMismatchError,
  TensorMissingError,
  UnsupportedError,
} from "@tandem/common";
import { bfloat16ToFloat32, float32ToBfloat16, float32ToHalf, halfToFloat32 } from "../numeric/float16.ts";
import {
  ODD_HIDDEN,
  PRESET_SPECS,
  randomCheckpointTensors,
  TINY_LLAMA,
  TINY_MIXTRAL,
  TINY_QWEN2,
  TINY_TIED,
  writeRandomCheckpoint,
  writeRandomExitAdapters,
  type RandomCheckpointSpec,
} from "../testing/random-checkpoint.ts";
import { loadCheckpoint, readCheckpointConfig } from "./load-checkpoint.ts";
import type { ModelWeights, WeightTensor } from "./model-weights.ts";
import { encodeSafetensors, SafetensorsFile, type SafetensorsDtype } from "./safetensors.ts";
import { weightsHash } from "./weights-hash.ts";

const root = mkdtempSync(join(tmpdir(), "tandem-checkpoint-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

let counter = 0;
async function checkpointDir(spec: RandomCheckpointSpec): Promise<string> {
  const dir = join(root, `c${counter++}`);
  await writeRandomCheckpoint(dir, spec);
  return dir;
}

/** A small checkpoint for the malformed-file cases. */
const SMALL: RandomCheckpointSpec = {
  ...TINY_LLAMA,
  hiddenSize: 32,
  intermediateSize: 48,
  numLayers: 2,
  numHeads: 2,
  numKvHeads: 1,
};

type Header = Record<string, { dtype: string; shape: number[]; data_offsets: number[] }>;

function readHeader(path: string): { header: Header; dataStart: number; bytes: Buffer } {
  const bytes = readFileSync(path);
  const length = Number(bytes.readBigUInt64LE(0));
  return {
    header: JSON.parse(bytes.subarray(8, 8 + length).toString("utf8")) as Header,
    dataStart: 8 + length,
    bytes,
  };
}

/** Rewrites a safetensors file after `edit` changes its header (the data stays as it was). */
function editHeader(path: string, edit: (header: Header) => void): void {
  const { header, dataStart, bytes } = readHeader(path);
  edit(header);
  const json = Buffer.from(JSON.stringify(header));
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(path, Buffer.concat([prefix, json, bytes.subarray(dataStart)]));
}

async function loadError(dir: string): Promise<TandemError> {
  const error = await loadCheckpoint(dir).then(
    () => new Error("expected loadCheckpoint to fail"),
    (e: unknown) => e,
  );
  if (error instanceof TandemError) return error;
  throw error;
}

/** The error of decoding the weights (as building a graph does): values are checked then. */
async function decodeError(dir: string): Promise<TandemError> {
  const checkpoint = await loadCheckpoint(dir);
  try {
    // Each tensor is decoded, and checked, when its data is first read.
    for (const tensor of loadedTensors(checkpoint.weights).values()) void tensor.data;
  } catch (error) {
    if (error instanceof TandemError) return error;
    throw error;
  }
  throw new Error("expected decoding the weights to fail");
}

/** Every tensor the loader returned, by checkpoint name. */
function loadedTensors(weights: ModelWeights): Map<string, WeightTensor> {
  const all: WeightTensor[] = [weights.embedTokens, weights.finalNorm, weights.lmHead];
  for (const layer of weights.layers) {
    for (const value of Object.values(layer) as (WeightTensor | WeightTensor[] | undefined)[]) {
      if (Array.isArray(value)) for (const expert of value) all.push(...Object.values(expert as object));
      else if (value) all.push(value);
    }
  }
  return new Map(all.map((t) => [t.name, t]));
}

const ROUNDED: Record<SafetensorsDtype, (x: Float32Array) => Float32Array> = {
  F32: (x) => x,
  F16: (x) => halfToFloat32(float32ToHalf(x)),
  BF16: (x) => bfloat16ToFloat32(float32ToBfloat16(x)),
};

/** Bit-for-bit equality; much faster than a deep `toEqual` on large arrays. */
function sameBits(a: Float32Array | undefined, b: Float32Array): boolean {
  if (!a) return false;
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(
    Buffer.from(b.buffer, b.byteOffset, b.byteLength),
  );
}

/** Checks that the loaded weights are exactly the written ones after the file's rounding. */
function expectWeightsAsWritten(weights: ModelWeights, spec: RandomCheckpointSpec): void {
  const loaded = loadedTensors(weights);
  const written = randomCheckpointTensors(spec);
  for (const tensor of written) {
    const got = loaded.get(tensor.name);
    expect(got, tensor.name).toBeDefined();
    expect(got?.shape, tensor.name).toEqual(tensor.shape);
    expect(sameBits(got?.data, ROUNDED[spec.dtype](tensor.data)), tensor.name).toBe(true);
  }
  // Tied checkpoints write no lm_head; everything loaded was written.
  expect(new Set(loaded.keys())).toEqual(new Set(written.map((t) => t.name)));
}

describe("loadCheckpoint on every preset", () => {
  for (const [name, spec] of Object.entries(PRESET_SPECS)) {
    it(`${name}: config as specified, every shape as the config implies, weights as written`, async () => {
      const { config, weights, tokenizerPath, dir } = await loadCheckpoint(await checkpointDir(spec));
      const headDim = spec.headDim ?? spec.hiddenSize / spec.numHeads;
      expect(config).toMatchObject({
        architecture: spec.architecture,
        vocabSize: spec.vocabSize,
        hiddenSize: spec.hiddenSize,
        numLayers: spec.numLayers,
        numHeads: spec.numHeads,
        numKvHeads: spec.numKvHeads,
        headDim,
        tieWordEmbeddings: spec.tieWordEmbeddings,
        attentionBias: spec.architecture === "qwen2",
        bosTokenId: 0,
        eosTokenId: [1],
      });
      const [h, m, v] = [spec.hiddenSize, spec.intermediateSize, spec.vocabSize];
      const [q, kv] = [spec.numHeads * headDim, spec.numKvHeads * headDim];
      expect(weights.embedTokens.shape).toEqual([v, h]);
      expect(weights.lmHead.shape).toEqual([v, h]);
      expect(weights.finalNorm.shape).toEqual([h]);
      expect(weights.layers).toHaveLength(spec.numLayers);
      for (const layer of weights.layers) {
        expect([layer.inputNorm.shape, layer.postAttentionNorm.shape]).toEqual([[h], [h]]);
        expect([layer.qProj.shape, layer.kProj.shape, layer.vProj.shape, layer.oProj.shape]).toEqual([
          [q, h],
          [kv, h],
          [kv, h],
          [h, q],
        ]);
        if (spec.architecture === "qwen2") {
          expect([layer.qBias?.shape, layer.kBias?.shape, layer.vBias?.shape]).toEqual([[q], [kv], [kv]]);
        } else {
          expect(layer.qBias).toBeUndefined();
        }
        if (spec.architecture === "mixtral") {
          expect(layer.gateProj).toBeUndefined();
          expect(layer.router?.shape).toEqual([spec.numExperts, h]);
          expect(layer.experts).toHaveLength(spec.numExperts ?? 0);
          for (const expert of layer.experts ?? []) {
            expect([expert.gateProj.shape, expert.upProj.shape, expert.downProj.shape]).toEqual([
              [m, h],
              [m, h],
              [h, m],
            ]);
          }
        } else {
          expect([layer.gateProj?.shape, layer.upProj?.shape, layer.downProj?.shape]).toEqual([
            [m, h],
            [m, h],
            [h, m],
          ]);
          expect(layer.experts).toBeUndefined();
        }
      }
      expect(weights.lmHead === weights.embedTokens).toBe(spec.tieWordEmbeddings);
      expectWeightsAsWritten(weights, spec);
      expect(tokenizerPath).toBe(join(dir, "tokenizer.json"));
    });
  }
});

describe("loadCheckpoint dtypes, shards and names", () => {
  const cases: [string, RandomCheckpointSpec][] = [
    ["F16", { ...TINY_LLAMA, dtype: "F16" }],
    ["BF16", { ...TINY_LLAMA, dtype: "BF16" }],
    ["F16 in 3 shards", { ...TINY_LLAMA, dtype: "F16", shards: 3 }],
    ["BF16 in 2 shards, tied", { ...TINY_TIED, dtype: "BF16", shards: 2 }],
    ["F32 in 4 shards, mixtral", { ...TINY_MIXTRAL, shards: 4 }],
  ];
  for (const [name, spec] of cases) {
    it(`${name}: weights equal the written ones rounded to the file's dtype`, async () => {
      const dir = await checkpointDir(spec);
      if (spec.shards) {
        expect(readdirSync(dir).filter((f) => f.endsWith(".safetensors"))).toHaveLength(spec.shards);
        expect(existsSync(join(dir, "model.safetensors"))).toBe(false);
      }
      expectWeightsAsWritten((await loadCheckpoint(dir)).weights, spec);
    });
  }

  it("maps Mixtral's w1/w3/w2 to the gate/up/down projections of each expert", async () => {
    const { weights } = await loadCheckpoint(await checkpointDir(TINY_MIXTRAL));
    const expert = weights.layers[1].experts?.[3];
    expect(expert?.gateProj.name).toBe("model.layers.1.block_sparse_moe.experts.3.w1.weight");
    expect(expert?.upProj.name).toBe("model.layers.1.block_sparse_moe.experts.3.w3.weight");
    expect(expert?.downProj.name).toBe("model.layers.1.block_sparse_moe.experts.3.w2.weight");
    expect(weights.layers[1].router?.name).toBe("model.layers.1.block_sparse_moe.gate.weight");
  });

  it("reads an explicit head_dim that differs from hidden / heads", async () => {
    const spec = { ...TINY_LLAMA, headDim: 8 };
    const { config, weights } = await loadCheckpoint(await checkpointDir(spec));
    expect(config.headDim).toBe(8);
    expect(weights.layers[0].qProj.shape).toEqual([32, 64]);
    expect(weights.layers[0].oProj.shape).toEqual([64, 32]);
  });

  it("ties lm_head to the embedding when the config says so, even if the file has an lm_head", async () => {
    const dir = await checkpointDir(TINY_LLAMA);
    const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
    writeFileSync(join(dir, "config.json"), JSON.stringify({ ...config, tie_word_embeddings: true }));
    const { weights } = await loadCheckpoint(dir);
    expect(weights.lmHead).toBe(weights.embedTokens);
  });

  it("ignores tensors the model does not use (e.g. rotary inv_freq buffers)", async () => {
    const dir = await checkpointDir(SMALL);
    const tensors = randomCheckpointTensors(SMALL);
    tensors.push({
      name: "model.layers.0.self_attn.rotary_emb.inv_freq",
      shape: [8],
      data: new Float32Array(8),
    });
    writeFileSync(join(dir, "model.safetensors"), encodeSafetensors(tensors, "F32"));
    expect((await loadCheckpoint(dir)).weights.layers).toHaveLength(2);
  });

  it("has no tokenizerPath when the checkpoint has no tokenizer.json", async () => {
    const dir = await checkpointDir({ ...SMALL, vocabSize: 200 });
    expect(existsSync(join(dir, "tokenizer.json"))).toBe(false);
    expect((await loadCheckpoint(dir)).tokenizerPath).toBeUndefined();
  });

  it("stops at every end token of config.json and generation_config.json (Llama 3 names three)", async () => {
    const dir = await checkpointDir({ ...SMALL, vocabSize: 200 });
    const configEos = (await loadCheckpoint(dir)).config.eosTokenId!;
    writeFileSync(
      join(dir, "generation_config.json"),
      JSON.stringify({ bos_token_id: 1, eos_token_id: [configEos[0], 150, 151], do_sample: true }),
    );
    expect((await loadCheckpoint(dir)).config.eosTokenId).toEqual([configEos[0], 150, 151]);
    writeFileSync(join(dir, "generation_config.json"), JSON.stringify({ eos_token_id: "</s>" }));
    await expect(loadCheckpoint(dir)).rejects.toThrow(
      /generation_config\.json: "eos_token_id" must be a token id/,
    );
    writeFileSync(join(dir, "generation_config.json"), "{ not json");
    await expect(loadCheckpoint(dir)).rejects.toThrow(/generation_config\.json: cannot be read as JSON/);
  });

  it("decodes a tensor only when its data is read, and again after releaseWeights", async () => {
    const dir = await checkpointDir(SMALL);
    const checkpoint = await loadCheckpoint(dir);
    const path = join(dir, "model.safetensors");
    const { header, dataStart, bytes } = readHeader(path);
    // A NaN in layer 1 does not stop a process that only ever reads layer 0.
    bytes.writeFloatLE(NaN, dataStart + header["model.layers.1.input_layernorm.weight"].data_offsets[0]);
    writeFileSync(path, bytes);
    const layer0 = checkpoint.weights.layers[0].inputNorm;
    expect(layer0.data).toBe(layer0.data); // decoded once, then kept
    expect(() => checkpoint.weights.layers[1].inputNorm.data).toThrow(TensorMismatchError);
    checkpoint.releaseWeights!();
    expect(checkpoint.weights.layers[0].inputNorm).not.toBe(layer0);
    expect(checkpoint.weights.layers[0].inputNorm.data).toEqual(layer0.data);
  });

  it("reads only config.json when asked for the config", async () => {
    const dir = await checkpointDir(ODD_HIDDEN);
    unlinkSync(join(dir, "model.safetensors"));
    expect(await readCheckpointConfig(dir)).toMatchObject({
      hiddenSize: 72,
      headDim: 12,
      intermediateSize: 97,
    });
  });
});

describe("weightsHash", () => {
  it("is the weights hash of config.json and every weight file in name order", async () => {
    const dir = await checkpointDir({ ...SMALL, shards: 2 });
    const files = await Promise.all(
      readdirSync(dir)
        .filter((f) => f.endsWith(".safetensors"))
        .sort()
        .map((f) => SafetensorsFile.open(join(dir, f))),
    );
    expect(files).toHaveLength(2);
    expect((await loadCheckpoint(dir)).weightsHash).toBe(
      weightsHash(readFileSync(join(dir, "config.json")), files),
    );
  });

  it("is the same for the same spec and differs when the weights, the dtype or the config differ", async () => {
    const hash = async (spec: RandomCheckpointSpec) =>
      (await loadCheckpoint(await checkpointDir(spec))).weightsHash;
    const base = await hash(SMALL);
    expect(await hash(SMALL)).toBe(base);
    expect(await hash({ ...SMALL, seed: SMALL.seed + 1 })).not.toBe(base);
    expect(await hash({ ...SMALL, dtype: "F16" })).not.toBe(base);
    expect(await hash({ ...SMALL, ropeTheta: 20000 })).not.toBe(base);
  });
});

describe("exit adapters named by tandem.json", () => {
  const ADAPTERS = { layers: [1], width: 8, seed: 5 };
  const withAdapters = async () => {
    const dir = await checkpointDir(SMALL);
    await writeRandomExitAdapters(dir, SMALL, ADAPTERS);
    return dir;
  };
  const adapterFile = (dir: string) => join(dir, "exit-adapters.safetensors");
  const tandemJson = (dir: string, json: Record<string, unknown>) =>
    writeFileSync(
      join(dir, "tandem.json"),
      JSON.stringify({ exit_layers: [1], recommended_split: 1, ...json }),
    );

  it("load with the checkpoint, each of its own width, decoded only when read", async () => {
    const checkpoint = await loadCheckpoint(await withAdapters());
    const adapter = checkpoint.weights.exitAdapters?.get(1);
    expect([...checkpoint.weights.exitAdapters!.keys()]).toEqual([1]);
    expect(adapter!.norm.shape).toEqual([32]);
    expect(adapter!.gateProj.shape).toEqual([8, 32]);
    expect(adapter!.upProj.shape).toEqual([8, 32]);
    expect(adapter!.downProj.shape).toEqual([32, 8]);
    expect(adapter!.downProj.data).toHaveLength(32 * 8);
  });

  it("have a hash of their own; the weights hash an edge and a worker agree on stays the model's", async () => {
    const dir = await withAdapters();
    const plain = await checkpointDir(SMALL);
    const other = await checkpointDir(SMALL);
    await writeRandomExitAdapters(other, SMALL, { ...ADAPTERS, seed: 6 });
    const [a, none, b] = await Promise.all([dir, plain, other].map((d) => loadCheckpoint(d)));
    expect(new Set([a.weightsHash, none.weightsHash, b.weightsHash]).size).toBe(1);
    expect(none.exitAdaptersHash).toBeUndefined();
    expect(a.exitAdaptersHash).toMatch(/^[0-9a-f]{64}$/);
    expect(b.exitAdaptersHash).not.toBe(a.exitAdaptersHash);
    expect((await loadCheckpoint(dir)).exitAdaptersHash).toBe(a.exitAdaptersHash);
  });

  it("a checkpoint without them has no adapters and the weights hash it always had", async () => {
    const dir = await checkpointDir(SMALL);
    const files = [await SafetensorsFile.open(join(dir, "model.safetensors"))];
    const checkpoint = await loadCheckpoint(dir);
    expect(checkpoint.weights.exitAdapters).toBeUndefined();
    expect(checkpoint.weightsHash).toBe(weightsHash(readFileSync(join(dir, "config.json")), files));
  });

  it("a file of the wrong tensors, an adapter after the last layer, a missing part: CheckpointError naming it", async () => {
    let dir = await withAdapters();
    editHeader(adapterFile(dir), (header) => {
      header["exit_adapters.1.mlp.extra.weight"] = header["exit_adapters.1.norm.weight"];
      delete header["exit_adapters.1.norm.weight"];
    });
    let error = await loadError(dir);
    expect(error).toBeInstanceOf(CheckpointError);
    expect(error.message).toMatch(
      /exit-adapters\.safetensors: tensor "exit_adapters\.1\.mlp\.extra\.weight" is not an exit adapter's/,
    );

    dir = await withAdapters();
    editHeader(adapterFile(dir), (header) => {
      for (const part of ["norm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]) {
        header[`exit_adapters.2.${part}.weight`] = header[`exit_adapters.1.${part}.weight`];
        delete header[`exit_adapters.1.${part}.weight`];
      }
    });
    error = await loadError(dir);
    expect(error.message).toMatch(
      /"exit_adapters\.2\.norm\.weight": no exit follows layer 2 of a 2-layer model/,
    );

    dir = await withAdapters();
    editHeader(adapterFile(dir), (header) => delete header["exit_adapters.1.mlp.up_proj.weight"]);
    error = await loadError(dir);
    expect(error.message).toMatch(/the adapter of exit 1 has no "exit_adapters\.1\.mlp\.up_proj\.weight"/);

    dir = await withAdapters();
    unlinkSync(adapterFile(dir));
    error = await loadError(dir);
    expect(error).toBeInstanceOf(CheckpointError);
    expect(error.message).toMatch(/exit-adapters\.safetensors: cannot be read/);
  });

  it("an adapter that attends: loaded with its attention half; a half that is incomplete or of the wrong heads is refused by name", async () => {
    const withAttending = async () => {
      const dir = await checkpointDir(SMALL);
      await writeRandomExitAdapters(dir, SMALL, { ...ADAPTERS, attending: ADAPTERS.layers });
      return dir;
    };
    let dir = await withAttending();
    const checkpoint = await loadCheckpoint(dir);
    const attention = checkpoint.weights.exitAdapters!.get(1)!.attention!;
    const qDim = SMALL.numHeads * (SMALL.hiddenSize / SMALL.numHeads);
    expect(attention.qProj.shape).toEqual([qDim, SMALL.hiddenSize]);
    expect(attention.oProj.shape).toEqual([SMALL.hiddenSize, qDim]);

    editHeader(adapterFile(dir), (header) => delete header["exit_adapters.1.self_attn.v_proj.weight"]);
    let error = await loadError(dir);
    expect(error).toBeInstanceOf(CheckpointError);
    expect(error.message).toMatch(
      /the adapter of exit 1 has no "exit_adapters\.1\.self_attn\.v_proj\.weight"/,
    );

    dir = await withAttending();
    editHeader(adapterFile(dir), (header) => {
      const [rows, cols] = header["exit_adapters.1.self_attn.k_proj.weight"].shape;
      header["exit_adapters.1.self_attn.k_proj.weight"].shape = [cols, rows];
    });
    error = await loadError(dir);
    expect(error).toBeInstanceOf(TensorMismatchError);
    expect(error.message).toMatch(/"exit_adapters\.1\.self_attn\.k_proj\.weight" has shape/);
  });

  it("shapes that disagree with the model or with each other: TensorMismatchError naming the tensor", async () => {
    let dir = await withAdapters();
    editHeader(adapterFile(dir), (header) => {
      header["exit_adapters.1.mlp.down_proj.weight"].shape = [8, 32];
    });
    let error = await loadError(dir);
    expect(error).toBeInstanceOf(TensorMismatchError);
    expect(error.message).toMatch(
      /"exit_adapters\.1\.mlp\.down_proj\.weight" has shape \[8, 32\], expected \[32, 8\]/,
    );

    dir = await withAdapters();
    editHeader(adapterFile(dir), (header) => {
      header["exit_adapters.1.norm.weight"].shape = [4, 8];
    });
    error = await loadError(dir);
    expect(error).toBeInstanceOf(TensorMismatchError);
    expect(error.message).toMatch(/"exit_adapters\.1\.norm\.weight" has shape \[4, 8\], expected \[32\]/);
  });

  it("a file name that leaves the model directory: CheckpointError naming tandem.json's field", async () => {
    for (const name of ["../exit-adapters.safetensors", "/etc/passwd", ".."]) {
      const dir = await withAdapters();
      tandemJson(dir, { exit_adapters: name });
      const error = await loadError(dir);
      expect(error).toBeInstanceOf(CheckpointError);
      expect(error.message).toMatch(/tandem\.json: exit_adapters: must be text matching/);
    }
  });
});

describe("loadCheckpoint rejects malformed checkpoints with named errors", () => {
  it("a truncated weight file: CheckpointError naming the file", async () => {
    const dir = await checkpointDir(SMALL);
    truncateSync(join(dir, "model.safetensors"), 5000);
    const error = await loadError(dir);
    expect(error).toBeInstanceOf(CheckpointError);
    expect((error as CheckpointError).file).toBe(join(dir, "model.safetensors"));
    expect(error.message).toMatch(/model\.safetensors: is truncated: tensor "[^"]+" ends at data byte/);
  });

  it("a weight file cut inside its header: CheckpointError naming the file", async () => {
    const dir = await checkpointDir(SMALL);
    truncateSync(join(dir, "model.safetensors"), 100);
    const error = await loadError(dir);
    expect(error).toBeInstanceOf(CheckpointError);
    expect(error.message).toMatch(/model\.safetensors: header length \d+ exceeds the file size 100/);
  });

  it("a corrupt header: CheckpointError naming the file", async () => {
    const dir = await checkpointDir(SMALL);
    const bytes = readFileSync(join(dir, "model.safetensors"));
    bytes.write("#", 8); // the header's opening brace
    writeFileSync(join(dir, "model.safetensors"), bytes);
    const error = await loadError(dir);
    expect(error).toBeInstanceOf(CheckpointError);
    expect(error.message).toMatch(/model\.safetensors: header is not valid JSON/);
  });

  it("a tensor whose shape disagrees with config.json: TensorMismatchError naming file, tensor and both shapes", async () => {
    const dir = await checkpointDir(SMALL);
    const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
    writeFileSync(join(dir, "config.json"), JSON.stringify({ ...config, intermediate_size: 40 }));
    const error = await loadError(dir);
    expect(error).toBeInstanceOf(TensorMismatchError);
    expect((error as TensorMismatchError).tensor).toBe("model.layers.0.mlp.gate_proj.weight");
    expect(error.message).toBe(
      `${join(dir, "model.safetensors")}: tensor "model.layers.0.mlp.gate_proj.weight" has shape [48, 32], expected [40, 32]`,
    );
  });

  it("a tensor with a shape of the wrong rank: TensorMismatchError", async () => {
    const dir = await checkpointDir(SMALL);
    editHeader(join(dir, "model.safetensors"), (header) => (header["model.norm.weight"].shape = [4, 8]));
    const error = await loadError(dir);
    expect(error).toBeInstanceOf(TensorMismatchError);
    expect(error.message).toMatch(
      /model\.safetensors: tensor "model\.norm\.weight" has shape \[4, 8\], expected \[32\]/,
    );
  });

  it("a missing tensor: TensorMissingError naming the file and the tensor", async () => {
    const dir = await checkpointDir(SMALL);
    editHeader(
      join(dir, "model.safetensors"),
      (header) => delete header["model.layers.1.mlp.up_proj.weight"],
    );
    const error = await loadError(dir);
    expect(error).toBeInstanceOf(TensorMissingError);
    expect(error.message).toBe(
      `${join(dir, "model.safetensors")}: tensor "model.layers.1.mlp.up_proj.weight" is missing`,
    );
  });

  it("a missing lm_head in an untied checkpoint, and a missing qwen2 bias", async () => {
    const untied = await checkpointDir(SMALL);
    editHeader(join(untied, "model.safetensors"), (header) => delete header["lm_head.weight"]);
    expect(await loadError(untied)).toMatchObject({ name: "TensorMissingError", tensor: "lm_head.weight" });

    const qwen = await checkpointDir({ ...TINY_QWEN2, numLayers: 1 });
    editHeader(
      join(qwen, "model.safetensors"),
      (header) => delete header["model.layers.0.self_attn.k_proj.bias"],
    );
    expect(await loadError(qwen)).toMatchObject({
      name: "TensorMissingError",
      tensor: "model.layers.0.self_attn.k_proj.bias",
    });
  });

  it("a tensor missing from every shard: TensorMissingError naming the index", async () => {
    const dir = await checkpointDir({ ...SMALL, shards: 2 });
    const indexPath = join(dir, "model.safetensors.index.json");
    const index = JSON.parse(readFileSync(indexPath, "utf8")) as { weight_map: Record<string, string> };
    delete index.weight_map["model.norm.weight"];
    writeFileSync(indexPath, JSON.stringify(index));
    const error = await loadError(dir);
    expect(error).toBeInstanceOf(TensorMissingError);
    expect(error.message).toBe(`${indexPath}: tensor "model.norm.weight" is missing`);
  });

  it("an index pointing at a shard that lacks the tensor: TensorMissingError naming the shard", async () => {
    const dir = await checkpointDir({ ...SMALL, shards: 2 });
    const indexPath = join(dir, "model.safetensors.index.json");
    const index = JSON.parse(readFileSync(indexPath, "utf8")) as { weight_map: Record<string, string> };
    index.weight_map["model.norm.weight"] = "model-00001-of-00002.safetensors";
    writeFileSync(indexPath, JSON.stringify(index));
    const error = await loadError(dir);
    expect(error).toBeInstanceOf(TensorMissingError);
    expect(error.message).toMatch(
      /model-00001-of-00002\.safetensors: tensor "model\.norm\.weight" is missing/,
    );
  });

  it("a missing shard, a bad index and a shard path outside the directory: CheckpointError naming the file", async () => {
    const dir = await checkpointDir({ ...SMALL, shards: 2 });
    const indexPath = join(dir, "model.safetensors.index.json");
    const index = readFileSync(indexPath, "utf8");

    unlinkSync(join(dir, "model-00002-of-00002.safetensors"));
    expect(await loadError(dir)).toBeInstanceOf(CheckpointError);
    expect((await loadError(dir)).message).toMatch(/model-00002-of-00002\.safetensors: cannot be read/);

    writeFileSync(indexPath, "{ weight_map: ");
    expect((await loadError(dir)).message).toMatch(/model\.safetensors\.index\.json: is not valid JSON/);
    writeFileSync(indexPath, "null");
    expect((await loadError(dir)).message).toMatch(
      /model\.safetensors\.index\.json: has no "weight_map" object/,
    );

    const escaping = JSON.parse(index) as { weight_map: Record<string, string> };
    escaping.weight_map["model.norm.weight"] = "../elsewhere.safetensors";
    writeFileSync(indexPath, JSON.stringify(escaping));
    const error = await loadError(dir);
    expect(error).toBeInstanceOf(CheckpointError);
    expect(error.message).toMatch(
      /index\.json: weight_map entry for "model\.norm\.weight" is not a file name/,
    );
  });

  it("a NaN weight: TensorMismatchError naming the tensor and the position, when its data is decoded", async () => {
    const dir = await checkpointDir(SMALL);
    const path = join(dir, "model.safetensors");
    const { header, dataStart, bytes } = readHeader(path);
    bytes.writeFloatLE(NaN, dataStart + header["model.norm.weight"].data_offsets[0] + 4 * 5);
    writeFileSync(path, bytes);
    const error = await decodeError(dir);
    expect(error).toBeInstanceOf(TensorMismatchError);
    expect(error.message).toBe(
      `${path}: tensor "model.norm.weight" has a non-finite value (NaN) at flat index 5`,
    );
  });

  it("an infinite weight in an F16 file: TensorMismatchError naming the tensor", async () => {
    const dir = await checkpointDir({ ...SMALL, dtype: "F16" });
    const path = join(dir, "model.safetensors");
    const { header, dataStart, bytes } = readHeader(path);
    bytes.writeUInt16LE(0xfc00, dataStart + header["model.layers.1.self_attn.o_proj.weight"].data_offsets[0]);
    writeFileSync(path, bytes);
    const error = await decodeError(dir);
    expect(error).toBeInstanceOf(TensorMismatchError);
    expect(error.message).toMatch(
      /tensor "model\.layers\.1\.self_attn\.o_proj\.weight" has a non-finite value \(-Infinity\) at flat index 0/,
    );
  });

  it("a weight stored as I64: UnsupportedError naming the file and the tensor", async () => {
    const dir = await checkpointDir(SMALL);
    editHeader(join(dir, "model.safetensors"), (header) => {
      const entry = header["model.norm.weight"];
      entry.dtype = "I64";
      entry.shape = [entry.shape[0] / 2];
    });
    const error = await loadError(dir);
    expect(error).toBeInstanceOf(UnsupportedError);
    expect(error.message).toBe(
      `${join(dir, "model.safetensors")}: tensor "model.norm.weight" has dtype I64; weights must be F32, F16, BF16`,
    );
  });

  it("a config.json without a required key: ModelConfigError naming config.json and the key", async () => {
    const dir = await checkpointDir(SMALL);
    const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
    delete config.num_hidden_layers;
    writeFileSync(join(dir, "config.json"), JSON.stringify(config));
    const error = await loadError(dir);
    expect(error).toBeInstanceOf(ModelConfigError);
    expect(error).toMatchObject({ file: join(dir, "config.json"), key: "num_hidden_layers" });
    expect(error.message).toBe(`${join(dir, "config.json")}: "num_hidden_layers" is missing`);
  });

  it("a config.json that is not JSON: CheckpointError naming config.json", async () => {
    const dir = await checkpointDir(SMALL);
    writeFileSync(join(dir, "config.json"), "{ hidden_size: 32 ");
    const error = await loadError(dir);
    expect(error).toBeInstanceOf(CheckpointError);
    expect(error.message).toMatch(/config\.json: is not valid JSON/);
  });

  it("a directory without config.json or without weights: CheckpointError saying what is missing", async () => {
    const empty = await loadError(join(root, "nothing-here"));
    expect(empty).toBeInstanceOf(CheckpointError);
    expect(empty.message).toMatch(/nothing-here\/config\.json: cannot be read/);

    const dir = await checkpointDir(SMALL);
    unlinkSync(join(dir, "model.safetensors"));
    expect((await loadError(dir)).message).toMatch(
      /has neither model\.safetensors nor model\.safetensors\.index\.json/,
    );
  });
});
