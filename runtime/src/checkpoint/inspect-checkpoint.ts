/**
 * What a checkpoint directory holds and what running it would take, read without loading
 * it (`tandem inspect`): config.json, generation_config.json, the safetensors headers, the
 * tokenizer's files and chat template, tandem.json. No tensor is read.
 *
 * Whether Tandem runs it is decided by the checks loading makes (parseModelConfig, then
 * every tensor the config implies against the headers): a checkpoint they refuse gets
 * their messages as its reasons, and still every fact that could be read.
 *
 * Memory per process is estimated for a few splits and each weight format from the
 * segment's exact graph weight bytes (segmentWeightBytes) as the memory target counts
 * them: RSS ≈ 1.2 × the weight bytes the process holds (all but an embedding table it
 * reads rows of on demand) + KV for the stated context + 150 MiB.
 */
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { CheckpointError, InvalidArgumentError, ModelConfigError, TandemError } from "@tandem/common";
import { ChatTemplate } from "../tokenizer/chat-template.ts";
import { Tokenizer, TOKENIZER_CONFIG_FILE } from "../tokenizer/tokenizer.ts";
import { cloudSegmentSpec, edgeSegmentSpec, type QuantizationOptions } from "../graph/deployment-specs.ts";
import {
  attendingExits,
  segmentSpec,
  WEIGHT_FORMATS,
  type SegmentSpec,
  type WeightFormat,
} from "../graph/segment-spec.ts";
import { kvBytesPerPosition, segmentWeightBytes } from "../graph/segment-weight-bytes.ts";
import { optionalTokenIds, parseModelConfig } from "./config-parser.ts";
import { readDeployment, type Deployment } from "./deployment-file.ts";
import { openExitAdapters } from "./exit-adapters.ts";
import {
  CONFIG_FILE,
  readGenerationEndTokens,
  readWeightHeaders,
  TOKENIZER_FILE,
  type WeightHeaders,
} from "./load-checkpoint.ts";
import type { ModelConfig, RopeScaling } from "./model-config.ts";

/** The memory target's allowance for Node, ONNX Runtime and buffers, beyond weights and KV. */
export const RSS_ALLOWANCE_BYTES = 150 * 2 ** 20;
/** The memory target's factor on a segment's weight bytes. */
export const RSS_WEIGHT_FACTOR = 1.2;
/** Positions of KV the RSS estimate holds when no context is given (capped at the model's). */
export const DEFAULT_INSPECT_CONTEXT = 2048;

export interface InspectOptions {
  /**
   * Splits to estimate memory for (edge layers [0, S), worker [S, L)), each in [1, L − 1].
   * @default tandem.json's recommended split and L/4, L/2, 3L/4 (rounded), within [1, L − 1]
   */
  splits?: number[];
  /** Weight formats to estimate memory for. @default every format: fp32, int8, w8a8, int4 */
  weightFormats?: WeightFormat[];
  /** KV positions of one sequence in the RSS estimate. @default 2048, or the model's context if shorter */
  contextPositions?: number;
  /** The quantized formats' block size and int4's head bits. @default SegmentSpec's */
  quantization?: QuantizationOptions;
}

/** The model's shape: from the parsed config, or, where config.json is refused, what its keys say. */
export interface ModelShape {
  hiddenSize?: number;
  numLayers?: number;
  numHeads?: number;
  numKvHeads?: number;
  headDim?: number;
  intermediateSize?: number;
  vocabSize?: number;
  tieWordEmbeddings?: boolean;
  ropeTheta?: number;
  /** "none", or the type and its parameters (as config.json writes them when refused). */
  ropeScaling?: string;
  /** Context length in positions (Mistral's sliding window caps it). */
  maxPositions?: number;
  numExperts?: number;
  numExpertsPerToken?: number;
}

export interface WeightFileFacts {
  name: string;
  bytes: number;
  tensors: number;
}

export interface WeightFacts {
  /** model.safetensors, or every shard of the index, in path order. */
  files: WeightFileFacts[];
  /** Bytes of every weight file. */
  bytes: number;
  /** Elements of every tensor in the files' headers. */
  parameters: number;
  /** Per stored dtype, the most parameters first. */
  dtypes: { dtype: string; tensors: number; parameters: number }[];
}

export interface TokenizerFacts {
  /** tokenizer.json is there (text in and out needs it). */
  tokenizerJson: boolean;
  tokenizerConfig: boolean;
  /** Tokens, ids included, the tokenizer adds to the vocabulary. */
  vocabSize?: number;
  /** What a text prompt gets before and after its own tokens (BOS for Llama 3), as token text. */
  promptPrefix?: string[];
  promptSuffix?: string[];
  /** Why the tokenizer cannot be loaded. */
  problem?: string;
}

export interface ChatTemplateFacts {
  /** The file the template is in (chat_template.jinja or tokenizer_config.json); absent: none. */
  source?: string;
  problem?: string;
}

/** One process's segment in one weight format. */
export interface SegmentEstimate {
  fromLayer: number;
  toLayer: number;
  /** Exits it evaluates (the final head counts as the exit after the last layer). */
  exitLayers: number[];
  weightFormat: WeightFormat;
  /** Bytes of the segment graph's weights (segmentWeightBytes). */
  weightBytes: number;
  kvBytesPer1000Positions: number;
  /**
   * RSS_WEIGHT_FACTOR × the weight bytes held (weightBytes less an embedding table read on
   * demand: segmentWeightBytes's readOnDemand) + KV of contextPositions + RSS_ALLOWANCE_BYTES.
   */
  estimatedRssBytes: number;
}

export interface SplitEstimate {
  split: number;
  weightFormat: WeightFormat;
  /** Layers [0, split), the embedding and the edge's exits. */
  edge: SegmentEstimate;
  /** Layers [split, L), the final norm and the LM head. */
  worker: SegmentEstimate;
}

export interface CheckpointInspection {
  dir: string;
  /** config.json's model_type. */
  family?: string;
  /** config.json's architectures (the transformers class). */
  architectures: string[];
  /** Loading would succeed: the config is parsed and every tensor it implies is in the files. */
  supported: boolean;
  /** Why not, in the words loading would throw, in the order it would meet them. */
  reasons: string[];
  shape: ModelShape;
  weights?: WeightFacts;
  /** config.json's bos_token_id. */
  bosTokenId?: number;
  /** Every end token of config.json and generation_config.json, as generation stops on them. */
  endTokenIds: number[];
  tokenizer: TokenizerFacts;
  chatTemplate: ChatTemplateFacts;
  /** tandem.json: the exits it was trained with and its split; `problem` when malformed. */
  deployment?:
    | {
        exitLayers: number[];
        recommendedSplit: number;
        /** Exit layer (as a string) → the width of its adapter (exit-adapters.ts); absent: none. */
        exitAdapterWidths?: Record<string, number>;
        /** The exit layers whose adapter attends (keeps a cache of its own); absent: none. */
        exitAdaptersAttending?: number[];
      }
    | { problem: string };
  /** The memory estimates; absent when the config cannot be parsed. */
  memory?: {
    contextPositions: number;
    /** The estimate, in words. */
    formula: string;
    wholeModel: SegmentEstimate[];
    splits: SplitEstimate[];
  };
}

/**
 * Reads what `dir` holds. A directory without a readable config.json object is not a
 * checkpoint: CheckpointError (or ModelConfigError for a config that is not an object).
 * Everything after that is reported, not thrown, except options that do not fit the model
 * (InvalidArgumentError naming the option).
 */
export async function inspectCheckpoint(
  dir: string,
  options: InspectOptions = {},
): Promise<CheckpointInspection> {
  const configPath = join(dir, CONFIG_FILE);
  const raw = await readConfigObject(configPath);
  const reasons: string[] = [];
  const attempt = async <T>(read: () => T | Promise<T>): Promise<T | undefined> => {
    try {
      return await read();
    } catch (error) {
      if (!(error instanceof TandemError)) throw error;
      reasons.push(error.message);
      return undefined;
    }
  };

  // The checks loadCheckpoint makes, in its order.
  const config = await attempt(() => parseModelConfig(raw, configPath));
  const generationEndTokens = await attempt(() => readGenerationEndTokens(dir));
  const headers = await attempt(() => readWeightHeaders(dir));
  if (config && headers) await attempt(() => headers.check(config));
  const deployment = await deploymentFacts(dir, config, attempt);

  const configEndTokens = config ? config.eosTokenId : lenientTokenIds(raw.eos_token_id, configPath);
  const inspection: CheckpointInspection = {
    dir,
    family: typeof raw.model_type === "string" ? raw.model_type : undefined,
    architectures: Array.isArray(raw.architectures)
      ? raw.architectures.filter((a): a is string => typeof a === "string")
      : [],
    supported: reasons.length === 0,
    reasons,
    shape: config ? shapeOfConfig(config) : shapeOfRawConfig(raw),
    weights: headers && weightFacts(headers),
    bosTokenId: config ? config.bosTokenId : lenientTokenIds(raw.bos_token_id, configPath)?.[0],
    endTokenIds: [...new Set([...(configEndTokens ?? []), ...(generationEndTokens ?? [])])],
    tokenizer: await tokenizerFacts(dir),
    chatTemplate: await chatTemplateFacts(dir),
    deployment,
  };
  if (config) {
    inspection.memory = memoryEstimates(config, inspection.deployment, options);
  }
  return inspection;
}

/** The splits estimated when none is asked for: tandem.json's and a quarter, half and three quarters in. */
export function representativeSplits(numLayers: number, recommendedSplit?: number): number[] {
  const candidates = [recommendedSplit, numLayers / 4, numLayers / 2, (3 * numLayers) / 4];
  const splits = candidates
    .filter((s): s is number => s !== undefined)
    .map((s) => Math.min(numLayers - 1, Math.max(1, Math.round(s))))
    .filter((s) => s >= 1 && s < numLayers);
  return [...new Set(splits)].sort((a, b) => a - b);
}

function memoryEstimates(
  config: ModelConfig,
  deployment: CheckpointInspection["deployment"],
  options: InspectOptions,
): NonNullable<CheckpointInspection["memory"]> {
  const layers = config.numLayers;
  const recommended =
    deployment && "recommendedSplit" in deployment ? deployment.recommendedSplit : undefined;
  const splits = options.splits ?? representativeSplits(layers, recommended);
  for (const split of splits)
    if (!Number.isInteger(split) || split < 1 || split >= layers)
      throw new InvalidArgumentError(
        "split",
        layers > 1
          ? `must be in [1, ${layers - 1}] for this ${layers}-layer model, got ${split}`
          : `a 1-layer model cannot be split, got ${split}`,
      );
  const formats = options.weightFormats ?? [...WEIGHT_FORMATS];
  const context = options.contextPositions ?? Math.min(DEFAULT_INSPECT_CONTEXT, config.maxPositions);
  if (!Number.isInteger(context) || context < 1)
    throw new InvalidArgumentError("contextPositions", `must be a positive integer, got ${context}`);

  const adapterWidths = new Map(
    Object.entries((deployment && "exitLayers" in deployment && deployment.exitAdapterWidths) || {}).map(
      ([layer, width]) => [Number(layer), width],
    ),
  );
  const attending = new Set(
    (deployment && "exitLayers" in deployment && deployment.exitAdaptersAttending) || [],
  );
  const estimate = (spec: SegmentSpec): SegmentEstimate => {
    const bytes = segmentWeightBytes(config, spec, adapterWidths, attending);
    const weightBytes = bytes.total;
    const kvEntries = spec.toLayer - spec.fromLayer + attendingExits(spec, config, attending).length;
    const kvPerPosition = kvBytesPerPosition(config, kvEntries);
    const exitLayers = [...spec.exits.map((e) => e.afterLayer), ...(spec.finalHead ? [layers] : [])];
    return {
      fromLayer: spec.fromLayer,
      toLayer: spec.toLayer,
      exitLayers: [...new Set(exitLayers)].sort((a, b) => a - b),
      weightFormat: spec.weightFormat,
      weightBytes,
      kvBytesPer1000Positions: 1000 * kvPerPosition,
      estimatedRssBytes:
        RSS_WEIGHT_FACTOR * (weightBytes - bytes.readOnDemand) +
        context * kvPerPosition +
        RSS_ALLOWANCE_BYTES,
    };
  };
  // The edge agent's exits: tandem.json's within the edge's layers, else one at the split.
  const trainedExits = deployment && "exitLayers" in deployment ? deployment.exitLayers : [];
  const edgeExits = (split: number) => {
    const within = trainedExits.filter((layer) => layer <= split);
    return (within.length > 0 ? within : [split]).map((afterLayer) => ({ afterLayer }));
  };
  return {
    contextPositions: context,
    formula: `estimated RSS = ${RSS_WEIGHT_FACTOR} × weight bytes held + KV of ${context} positions + ${RSS_ALLOWANCE_BYTES / 2 ** 20} MiB`,
    wholeModel: formats.map((format) =>
      estimate(
        segmentSpec({
          fromLayer: 0,
          toLayer: layers,
          finalHead: true,
          weightFormat: format,
          ...options.quantization,
        }),
      ),
    ),
    splits: splits.flatMap((split) =>
      formats.map((format) => ({
        split,
        weightFormat: format,
        edge: estimate(edgeSegmentSpec(split, edgeExits(split), format, options.quantization)),
        worker: estimate(cloudSegmentSpec(split, layers, format, options.quantization)),
      })),
    ),
  };
}

async function readConfigObject(path: string): Promise<Record<string, unknown>> {
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
  if (typeof json !== "object" || json === null || Array.isArray(json))
    throw new ModelConfigError(path, "(root)", "must be a JSON object");
  return json as Record<string, unknown>;
}

/** Token ids as config.json lists them, or undefined where they are not ids (the parser's reason is reported). */
function lenientTokenIds(value: unknown, file: string): number[] | undefined {
  try {
    return optionalTokenIds(value, file, "token ids");
  } catch {
    return undefined;
  }
}

function shapeOfConfig(config: ModelConfig): ModelShape {
  return {
    hiddenSize: config.hiddenSize,
    numLayers: config.numLayers,
    numHeads: config.numHeads,
    numKvHeads: config.numKvHeads,
    headDim: config.headDim,
    intermediateSize: config.intermediateSize,
    vocabSize: config.vocabSize,
    tieWordEmbeddings: config.tieWordEmbeddings,
    ropeTheta: config.ropeTheta,
    ropeScaling: describeRopeScaling(config.ropeScaling),
    maxPositions: config.maxPositions,
    numExperts: config.numExperts,
    numExpertsPerToken: config.numExpertsPerToken,
  };
}

/** What config.json's keys say, each taken only where it has the type the parser wants. */
function shapeOfRawConfig(raw: Record<string, unknown>): ModelShape {
  const int = (key: string) => {
    const value = raw[key];
    return typeof value === "number" && Number.isInteger(value) && value > 0 ? value : undefined;
  };
  const hiddenSize = int("hidden_size");
  const numHeads = int("num_attention_heads");
  const tie = raw.tie_word_embeddings;
  const theta = raw.rope_theta;
  return {
    hiddenSize,
    numLayers: int("num_hidden_layers"),
    numHeads,
    numKvHeads: int("num_key_value_heads") ?? numHeads,
    headDim: int("head_dim") ?? (hiddenSize && numHeads ? hiddenSize / numHeads : undefined),
    intermediateSize: int("intermediate_size"),
    vocabSize: int("vocab_size"),
    tieWordEmbeddings: typeof tie === "boolean" ? tie : undefined,
    ropeTheta: typeof theta === "number" ? theta : undefined,
    ropeScaling: raw.rope_scaling == null ? "none" : JSON.stringify(raw.rope_scaling),
    maxPositions: int("max_position_embeddings"),
    numExperts: int("num_local_experts") ?? int("num_experts"),
    numExpertsPerToken: int("num_experts_per_tok"),
  };
}

function describeRopeScaling(scaling: RopeScaling | undefined): string {
  if (!scaling) return "none";
  if (scaling.type === "linear") return `linear, factor ${scaling.factor}`;
  return (
    `llama3, factor ${scaling.factor}, low_freq_factor ${scaling.lowFreqFactor}, ` +
    `high_freq_factor ${scaling.highFreqFactor}, original context ${scaling.originalMaxPositions}`
  );
}

function weightFacts(headers: WeightHeaders): WeightFacts {
  const dtypes = new Map<string, { dtype: string; tensors: number; parameters: number }>();
  let parameters = 0;
  for (const file of headers.files) {
    for (const entry of file.entries.values()) {
      const count = entry.shape.reduce((a, b) => a * b, 1);
      parameters += count;
      const facts = dtypes.get(entry.dtype) ?? { dtype: entry.dtype, tensors: 0, parameters: 0 };
      facts.tensors += 1;
      facts.parameters += count;
      dtypes.set(entry.dtype, facts);
    }
  }
  return {
    files: headers.files.map((file) => ({
      name: basename(file.path),
      bytes: file.size,
      tensors: file.entries.size,
    })),
    bytes: headers.files.reduce((sum, file) => sum + file.size, 0),
    parameters,
    dtypes: [...dtypes.values()].sort((a, b) => b.parameters - a.parameters),
  };
}

async function tokenizerFacts(dir: string): Promise<TokenizerFacts> {
  const path = join(dir, TOKENIZER_FILE);
  const facts: TokenizerFacts = {
    tokenizerJson: existsSync(path),
    tokenizerConfig: existsSync(join(dir, TOKENIZER_CONFIG_FILE)),
  };
  if (!facts.tokenizerJson) return facts;
  try {
    const tokenizer = await Tokenizer.fromFile(path);
    // What encodePrompt puts around a text's own tokens: the probe's ids sit in the middle.
    const probe = "a";
    const plain = tokenizer.encode(probe);
    const prompt = tokenizer.encodePrompt(probe);
    const start = Math.max(
      0,
      prompt.findIndex((_, i) => plain.every((id, j) => prompt[i + j] === id)),
    );
    const text = (ids: number[]) => ids.map((id) => tokenizer.decode([id], { skipSpecialTokens: false }));
    facts.vocabSize = tokenizer.vocabSize;
    facts.promptPrefix = text(prompt.slice(0, start));
    facts.promptSuffix = text(prompt.slice(start + plain.length));
  } catch (error) {
    if (!(error instanceof TandemError)) throw error;
    facts.problem = error.message;
  }
  return facts;
}

async function chatTemplateFacts(dir: string): Promise<ChatTemplateFacts> {
  try {
    const template = await ChatTemplate.find(dir);
    return template ? { source: basename(template.source) } : {};
  } catch (error) {
    if (!(error instanceof TandemError)) throw error;
    return { problem: error.message };
  }
}

/**
 * tandem.json's facts, read once; a malformed one is its problem here (loadCheckpoint
 * refuses it too). Its exit adapters' file is opened with `attempt`, so one that cannot be
 * loaded is a reason the model does not run.
 */
async function deploymentFacts(
  dir: string,
  config: ModelConfig | undefined,
  attempt: <T>(read: () => T | Promise<T>) => Promise<T | undefined>,
): Promise<CheckpointInspection["deployment"]> {
  let deployment: Deployment | undefined;
  try {
    deployment = readDeployment(dir);
  } catch (error) {
    if (!(error instanceof TandemError)) throw error;
    return { problem: error.message };
  }
  if (!deployment) return undefined;
  const facts: NonNullable<CheckpointInspection["deployment"]> & { exitLayers: number[] } = {
    exitLayers: deployment.exitLayers,
    recommendedSplit: deployment.recommendedSplit,
  };
  const path = deployment.exitAdaptersPath;
  const adapters = config && path ? await attempt(() => openExitAdapters(path, config)) : undefined;
  if (adapters) facts.exitAdapterWidths = Object.fromEntries(adapters.widths);
  if (adapters && adapters.attending.length > 0) facts.exitAdaptersAttending = adapters.attending;
  return facts;
}
