/**
 * Loads a Hugging Face checkpoint directory: config.json, model.safetensors or a sharded
 * model.safetensors.index.json, and tokenizer.json, generation_config.json (its end
 * tokens) and the exit adapters tandem.json names (exit-adapters.ts) when present. Every tensor the config
 * implies is checked for presence, shape and finite values; a mismatch throws an error
 * naming the file and the tensor rather than producing silent garbage later.
 */
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { CheckpointError, TensorMissingError } from "@tandem/common";
import { optionalTokenIds, parseModelConfig } from "./config-parser.ts";
import { readDeployment } from "./deployment-file.ts";
import { openExitAdapters } from "./exit-adapters.ts";
import { readJsonObject } from "./json-file.ts";
import type { ModelConfig } from "./model-config.ts";
import type { Checkpoint, ExpertWeights, LayerWeights, ModelWeights, WeightTensor } from "./model-weights.ts";
import { moeTensorNames } from "./moe-layout.ts";
import { SafetensorsFile } from "./safetensors.ts";
import { weightsHash } from "./weights-hash.ts";

export const CONFIG_FILE = "config.json";
export const SINGLE_WEIGHTS_FILE = "model.safetensors";
export const WEIGHTS_INDEX_FILE = "model.safetensors.index.json";
export const TOKENIZER_FILE = "tokenizer.json";
export const GENERATION_CONFIG_FILE = "generation_config.json";
/** Stands for config.json in the exit adapters' hash (weights-hash.ts reads their file as it reads weights). */
const EXIT_ADAPTERS_HASH_PREFIX = new TextEncoder().encode("exit adapters\n");

/** Parses only config.json: cheap enough to call before deciding to load the weights. */
export async function readCheckpointConfig(dir: string): Promise<ModelConfig> {
  return configOf(dir, await readConfigBytes(dir));
}

/**
 * config.json, with generation_config.json's end tokens merged into `eosTokenId`:
 * generation stops at any end token either file names (Llama 3's generation_config.json
 * adds <|eom_id|> and <|eot_id|> to config.json's <|end_of_text|>).
 */
async function configOf(dir: string, configBytes: Buffer): Promise<ModelConfig> {
  const config = parseConfigBytes(configBytes, join(dir, CONFIG_FILE));
  const endTokens = await readGenerationEndTokens(dir);
  if (endTokens) config.eosTokenId = [...new Set([...(config.eosTokenId ?? []), ...endTokens])];
  return config;
}

export interface LoadCheckpointOptions {
  /**
   * Load the exit adapters tandem.json names. false: plain exits, as if it named none (an
   * A/B of the adapters on the same weights). @default true
   */
  exitAdapters?: boolean;
}

export async function loadCheckpoint(dir: string, options: LoadCheckpointOptions = {}): Promise<Checkpoint> {
  const configBytes = await readConfigBytes(dir);
  const config = await configOf(dir, configBytes);
  const reader = await openWeights(dir);
  const deployment = readDeployment(dir);
  const adapters =
    options.exitAdapters !== false && deployment?.exitAdaptersPath
      ? await openExitAdapters(deployment.exitAdaptersPath, config)
      : undefined;

  const hash = weightsHash(configBytes, reader.files());

  // Every tensor the config implies is checked now, from the headers (presence, shape,
  // dtype): a wrong checkpoint fails at load, naming the tensor. Each tensor is decoded to
  // fp32 (and checked for non-finite values) only when its data is first used: a process
  // whose graph is in the cache decodes none, and one building a segment's graph only
  // that segment's.
  checkWeights(config, reader);
  let weights: ModelWeights | undefined;
  const tokenizerPath = join(dir, TOKENIZER_FILE);
  return {
    dir,
    config,
    get weights() {
      weights ??= {
        ...readWeights(config, (name, shape) => reader.lazy(name, shape)),
        exitAdapters: adapters?.weights(lazyTensor),
      };
      return weights;
    },
    releaseWeights() {
      weights = undefined;
    },
    weightsHash: hash,
    exitAdaptersHash: adapters && weightsHash(EXIT_ADAPTERS_HASH_PREFIX, [adapters.file]),
    tokenizerPath: existsSync(tokenizerPath) ? tokenizerPath : undefined,
  };
}

/** A checkpoint's weight files with their headers read, and no tensor data: what `tandem inspect` reads. */
export interface WeightHeaders {
  /** Every distinct weight file (model.safetensors, or every shard of the index), in path order. */
  files: SafetensorsFile[];
  /**
   * Checks every tensor `config` implies against the headers (presence, dtype, shape) as
   * loadCheckpoint does; throws TensorMissingError, TensorMismatchError or UnsupportedError
   * naming the first that fails.
   */
  check(config: ModelConfig): void;
}

/** Opens the weight files as loadCheckpoint does (same errors), reading only their headers. */
export async function readWeightHeaders(dir: string): Promise<WeightHeaders> {
  const reader = await openWeights(dir);
  return { files: reader.files(), check: (config) => checkWeights(config, reader) };
}

/** Every tensor `config` implies, with its shape, in checkpoint order (a tied LM head once). */
export function expectedTensors(config: ModelConfig): { name: string; shape: number[] }[] {
  const tensors: { name: string; shape: number[] }[] = [];
  readWeights(config, (name, shape) => {
    tensors.push({ name, shape });
    return { name, shape, data: NOT_DECODED };
  });
  return tensors;
}

/** Checks, from the headers only, that every tensor the config implies is there as it must be. */
function checkWeights(config: ModelConfig, reader: TensorReader): void {
  readWeights(config, (name, shape) => reader.describe(name, shape));
}

/** `eos_token_id` of generation_config.json, when the checkpoint has one and it names any. */
export async function readGenerationEndTokens(dir: string): Promise<number[] | undefined> {
  const path = join(dir, GENERATION_CONFIG_FILE);
  if (!existsSync(path)) return undefined;
  return optionalTokenIds((await readJsonObject(path)).eos_token_id, path, "eos_token_id");
}

async function readConfigBytes(dir: string): Promise<Buffer> {
  const path = join(dir, CONFIG_FILE);
  try {
    return await readFile(path);
  } catch (error) {
    throw new CheckpointError(path, `cannot be read (${(error as Error).message})`, { cause: error });
  }
}

function parseConfigBytes(bytes: Buffer, path: string): ModelConfig {
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString("utf8"));
  } catch (error) {
    throw new CheckpointError(path, `is not valid JSON (${(error as Error).message})`, { cause: error });
  }
  return parseModelConfig(json, path);
}

/** Opens model.safetensors, or every shard named by model.safetensors.index.json. */
async function openWeights(dir: string): Promise<TensorReader> {
  const indexPath = join(dir, WEIGHTS_INDEX_FILE);
  if (existsSync(indexPath)) return openShards(dir, indexPath);
  const single = join(dir, SINGLE_WEIGHTS_FILE);
  if (!existsSync(single))
    throw new CheckpointError(dir, `has neither ${SINGLE_WEIGHTS_FILE} nor ${WEIGHTS_INDEX_FILE}`);
  const file = await SafetensorsFile.open(single);
  const byTensor = new Map<string, SafetensorsFile>();
  for (const name of file.entries.keys()) byTensor.set(name, file);
  return new TensorReader(byTensor, single);
}

async function openShards(dir: string, indexPath: string): Promise<TensorReader> {
  let index: unknown;
  try {
    index = JSON.parse(await readFile(indexPath, "utf8"));
  } catch (error) {
    throw new CheckpointError(indexPath, `is not valid JSON (${(error as Error).message})`, {
      cause: error,
    });
  }
  const weightMap = (index as { weight_map?: unknown } | null)?.weight_map;
  if (typeof weightMap !== "object" || weightMap === null || Array.isArray(weightMap))
    throw new CheckpointError(indexPath, `has no "weight_map" object`);

  const entries = Object.entries(weightMap as Record<string, unknown>);
  for (const [tensor, fileName] of entries) {
    // Shards must sit beside the index: a path could point anywhere on the machine.
    if (typeof fileName !== "string" || fileName === "" || /[/\\]|^\.\.?$/.test(fileName)) {
      throw new CheckpointError(
        indexPath,
        `weight_map entry for "${tensor}" is not a file name in the checkpoint directory`,
      );
    }
  }
  const opened = new Map<string, SafetensorsFile>();
  const byTensor = new Map<string, SafetensorsFile>();
  for (const [tensor, fileName] of entries as [string, string][]) {
    let file = opened.get(fileName);
    if (!file) {
      file = await SafetensorsFile.open(join(dir, fileName));
      opened.set(fileName, file);
    }
    if (!file.has(tensor)) throw new TensorMissingError(file.path, tensor);
    byTensor.set(tensor, file);
  }
  return new TensorReader(byTensor, indexPath);
}

/** Reads tensors by name from whichever file holds them, checking shape and values. */
class TensorReader {
  constructor(
    private readonly byTensor: Map<string, SafetensorsFile>,
    /** The file a missing tensor is reported against: the single file or the index. */
    private readonly source: string,
  ) {}

  has(name: string): boolean {
    return this.byTensor.has(name);
  }

  /** Every distinct weight file, in path order. */
  files(): SafetensorsFile[] {
    return [...new Set(this.byTensor.values())].sort((a, b) => a.path.localeCompare(b.path));
  }

  /** Checks a tensor's presence, dtype and shape from its file's header, without decoding it. */
  describe(name: string, shape: number[]): WeightTensor {
    this.fileOf(name).shapedEntry(name, shape);
    return { name, shape, data: NOT_DECODED };
  }

  /** The tensor `name` of whichever file holds it, decoded on first read (lazyTensor). */
  lazy(name: string, shape: number[]): WeightTensor {
    return lazyTensor(this.fileOf(name), name, shape);
  }

  private fileOf(name: string): SafetensorsFile {
    const file = this.byTensor.get(name);
    if (!file) throw new TensorMissingError(this.source, name);
    return file;
  }
}

/**
 * A tensor of `file`, decoded to fp32 when its data is first read (its shape checked again
 * and every value finite: readChecked), then kept by the returned object until released.
 */
function lazyTensor(file: SafetensorsFile, name: string, shape: number[]): WeightTensor {
  let data: Float32Array | undefined;
  return {
    name,
    shape,
    get data() {
      data ??= file.readChecked(name, shape).data;
      return data;
    },
    release() {
      data = undefined;
    },
    rows(begin: number, end: number) {
      return data
        ? data.slice(begin * shape[1], end * shape[1])
        : file.readRowsChecked(name, shape, begin, end);
    },
  };
}

/** What `describe` returns as data: the check reads headers only. */
const NOT_DECODED = new Float32Array(0);

/** The model's weights as the config lays them out, each tensor from `tensor`. */
function readWeights(
  config: ModelConfig,
  tensor: (name: string, shape: number[]) => WeightTensor,
): ModelWeights {
  const { hiddenSize: h, intermediateSize: m, vocabSize: v, numHeads, numKvHeads, headDim } = config;
  const embedTokens = tensor("model.embed_tokens.weight", [v, h]);
  const layers: LayerWeights[] = [];
  for (let i = 0; i < config.numLayers; i++) {
    const p = `model.layers.${i}`;
    const layer: LayerWeights = {
      inputNorm: tensor(`${p}.input_layernorm.weight`, [h]),
      qProj: tensor(`${p}.self_attn.q_proj.weight`, [numHeads * headDim, h]),
      kProj: tensor(`${p}.self_attn.k_proj.weight`, [numKvHeads * headDim, h]),
      vProj: tensor(`${p}.self_attn.v_proj.weight`, [numKvHeads * headDim, h]),
      oProj: tensor(`${p}.self_attn.o_proj.weight`, [h, numHeads * headDim]),
      postAttentionNorm: tensor(`${p}.post_attention_layernorm.weight`, [h]),
    };
    if (config.attentionBias) {
      layer.qBias = tensor(`${p}.self_attn.q_proj.bias`, [numHeads * headDim]);
      layer.kBias = tensor(`${p}.self_attn.k_proj.bias`, [numKvHeads * headDim]);
      layer.vBias = tensor(`${p}.self_attn.v_proj.bias`, [numKvHeads * headDim]);
    }
    if (config.queryKeyNorm) {
      layer.qNorm = tensor(`${p}.self_attn.q_norm.weight`, [headDim]);
      layer.kNorm = tensor(`${p}.self_attn.k_norm.weight`, [headDim]);
    }
    const moe = moeTensorNames(config.architecture, i, config.numExperts ?? 0);
    if (moe) {
      layer.router = tensor(moe.router, [config.numExperts!, h]);
      layer.experts = moe.experts.map((names): ExpertWeights => ({
        gateProj: tensor(names.gate, [m, h]),
        upProj: tensor(names.up, [m, h]),
        downProj: tensor(names.down, [h, m]),
      }));
    } else {
      layer.gateProj = tensor(`${p}.mlp.gate_proj.weight`, [m, h]);
      layer.upProj = tensor(`${p}.mlp.up_proj.weight`, [m, h]);
      layer.downProj = tensor(`${p}.mlp.down_proj.weight`, [h, m]);
    }
    layers.push(layer);
  }
  const finalNorm = tensor("model.norm.weight", [h]);
  // transformers ties lm_head to the embedding whenever the config says so, even if the
  // file also carries an lm_head.weight; do the same.
  const lmHead = config.tieWordEmbeddings ? embedTokens : tensor("lm_head.weight", [v, h]);
  return { embedTokens, layers, finalNorm, lmHead };
}
