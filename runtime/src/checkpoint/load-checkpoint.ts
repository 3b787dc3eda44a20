/**
 * Loads a Hugging Face checkpoint directory: config.json, model.safetensors or a sharded
 * model.safetensors.index.json, and tokenizer.json when present. Every tensor the config
 * implies is checked for presence, shape and finite values; a mismatch throws an error
 * naming the file and the tensor rather than producing silent garbage later.
 */
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { CheckpointError, TensorMismatchError, TensorMissingError } from "../errors.ts";
import { parseModelConfig } from "./config-parser.ts";
import type { ModelConfig } from "./model-config.ts";
import type { Checkpoint, ExpertWeights, LayerWeights, ModelWeights, WeightTensor } from "./model-weights.ts";
import { SafetensorsFile } from "./safetensors.ts";

export const CONFIG_FILE = "config.json";
export const SINGLE_WEIGHTS_FILE = "model.safetensors";
export const WEIGHTS_INDEX_FILE = "model.safetensors.index.json";
export const TOKENIZER_FILE = "tokenizer.json";

export async function readCheckpointConfig(dir: string): Promise<ModelConfig> {
  const path = join(dir, CONFIG_FILE);
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    throw new CheckpointError(path, `cannot be read (${(error as Error).message})`, { cause: error });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new CheckpointError(path, `is not valid JSON (${(error as Error).message})`, { cause: error });
  }
  return parseModelConfig(json, path);
}

export async function loadCheckpoint(dir: string): Promise<Checkpoint> {
  const config = await readCheckpointConfig(dir);
  const files = await openWeightFiles(dir);
  const hash = createHash("sha256");
  hash.update(await readFile(join(dir, CONFIG_FILE)));
  for (const file of [...new Set(files.values())].sort((a, b) => a.path.localeCompare(b.path)))
    hash.update(file.bytes);

  const reader = new TensorReader(files, dir);
  const weights = readWeights(config, reader);
  const tokenizerPath = join(dir, TOKENIZER_FILE);
  return {
    dir,
    config,
    weights,
    weightsHash: hash.digest("hex"),
    tokenizerPath: existsSync(tokenizerPath) ? tokenizerPath : undefined,
  };
}

/** Maps each tensor name to the file that holds it. */
async function openWeightFiles(dir: string): Promise<Map<string, SafetensorsFile>> {
  const byTensor = new Map<string, SafetensorsFile>();
  const indexPath = join(dir, WEIGHTS_INDEX_FILE);
  if (existsSync(indexPath)) {
    let index: { weight_map?: Record<string, string> };
    try {
      index = JSON.parse(await readFile(indexPath, "utf8")) as typeof index;
    } catch (error) {
      throw new CheckpointError(indexPath, `is not valid JSON (${(error as Error).message})`, {
        cause: error,
      });
    }
    if (typeof index.weight_map !== "object" || index.weight_map === null)
      throw new CheckpointError(indexPath, `has no "weight_map" object`);
    const opened = new Map<string, SafetensorsFile>();
    for (const [tensor, fileName] of Object.entries(index.weight_map)) {
      if (typeof fileName !== "string" || fileName.includes("/") || fileName.includes("\\")) {
        throw new CheckpointError(
          indexPath,
          `weight_map entry for "${tensor}" is not a file name in the checkpoint directory`,
        );
      }
      let file = opened.get(fileName);
      if (!file) {
        file = await SafetensorsFile.open(join(dir, fileName));
        opened.set(fileName, file);
      }
      if (!file.has(tensor)) throw new TensorMissingError(file.path, tensor);
      byTensor.set(tensor, file);
    }
    return byTensor;
  }
  const single = join(dir, SINGLE_WEIGHTS_FILE);
  if (!existsSync(single))
    throw new CheckpointError(dir, `has neither ${SINGLE_WEIGHTS_FILE} nor ${WEIGHTS_INDEX_FILE}`);
  const file = await SafetensorsFile.open(single);
  for (const name of file.entries.keys()) byTensor.set(name, file);
  return byTensor;
}

class TensorReader {
  constructor(
    private readonly files: Map<string, SafetensorsFile>,
    private readonly dir: string,
  ) {}

  has(name: string): boolean {
    return this.files.has(name);
  }

  read(name: string, shape: number[]): WeightTensor {
    const file = this.files.get(name);
    if (!file) {
      const where =
        this.files.size > 0 ? [...this.files.values()][0].path : join(this.dir, SINGLE_WEIGHTS_FILE);
      throw new TensorMissingError(where, name);
    }
    const tensor = file.read(name);
    if (tensor.shape.length !== shape.length || tensor.shape.some((d, i) => d !== shape[i])) {
      throw new TensorMismatchError(
        file.path,
        name,
        `has shape [${tensor.shape.join(", ")}], expected [${shape.join(", ")}]`,
      );
    }
    for (let i = 0; i < tensor.data.length; i++) {
      if (!Number.isFinite(tensor.data[i]))
        throw new TensorMismatchError(
          file.path,
          name,
          `has a non-finite value (${tensor.data[i]}) at flat index ${i}`,
        );
    }
    return { name, shape, data: tensor.data };
  }
}

function readWeights(config: ModelConfig, reader: TensorReader): ModelWeights {
  const { hiddenSize: h, intermediateSize: m, vocabSize: v, numHeads, numKvHeads, headDim } = config;
  const embedTokens = reader.read("model.embed_tokens.weight", [v, h]);
  const layers: LayerWeights[] = [];
  for (let i = 0; i < config.numLayers; i++) {
    const p = `model.layers.${i}`;
    const layer: LayerWeights = {
      inputNorm: reader.read(`${p}.input_layernorm.weight`, [h]),
      qProj: reader.read(`${p}.self_attn.q_proj.weight`, [numHeads * headDim, h]),
      kProj: reader.read(`${p}.self_attn.k_proj.weight`, [numKvHeads * headDim, h]),
      vProj: reader.read(`${p}.self_attn.v_proj.weight`, [numKvHeads * headDim, h]),
      oProj: reader.read(`${p}.self_attn.o_proj.weight`, [h, numHeads * headDim]),
      postAttentionNorm: reader.read(`${p}.post_attention_layernorm.weight`, [h]),
    };
    if (config.attentionBias) {
      layer.qBias = reader.read(`${p}.self_attn.q_proj.bias`, [numHeads * headDim]);
      layer.kBias = reader.read(`${p}.self_attn.k_proj.bias`, [numKvHeads * headDim]);
      layer.vBias = reader.read(`${p}.self_attn.v_proj.bias`, [numKvHeads * headDim]);
    }
    if (config.architecture === "mixtral") {
      const experts = config.numExperts ?? 0;
      layer.router = reader.read(`${p}.block_sparse_moe.gate.weight`, [experts, h]);
      layer.experts = Array.from({ length: experts }, (_, e): ExpertWeights => ({
        gateProj: reader.read(`${p}.block_sparse_moe.experts.${e}.w1.weight`, [m, h]),
        downProj: reader.read(`${p}.block_sparse_moe.experts.${e}.w2.weight`, [h, m]),
        upProj: reader.read(`${p}.block_sparse_moe.experts.${e}.w3.weight`, [m, h]),
      }));
    } else {
      layer.gateProj = reader.read(`${p}.mlp.gate_proj.weight`, [m, h]);
      layer.upProj = reader.read(`${p}.mlp.up_proj.weight`, [m, h]);
      layer.downProj = reader.read(`${p}.mlp.down_proj.weight`, [h, m]);
    }
    layers.push(layer);
  }
  const finalNorm = reader.read("model.norm.weight", [h]);
  // Tied checkpoints usually omit lm_head.weight; some write it anyway (equal to the embedding).
  const lmHead =
    config.tieWordEmbeddings && !reader.has("lm_head.weight")
      ? embedTokens
      : reader.read("lm_head.weight", [v, h]);
  return { embedTokens, layers, finalNorm, lmHead: config.tieWordEmbeddings ? embedTokens : lmHead };
}
