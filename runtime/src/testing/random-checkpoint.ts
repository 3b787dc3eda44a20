/**
 * Deterministic random checkpoints in Hugging Face layout (config.json, safetensors,
 * tokenizer.json) for tests and benchmarks: the same spec gives the same bytes. Weights
 * are scaled like a trained model's (linear ~ N(0, 1/in), norms near 1) so activations
 * stay in range and exits are not uniformly unsure.
 */
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { InternalError, InvalidArgumentError } from "@tandem/common";
import { hasQueryKeyNorm, type ModelArchitecture, type RopeScaling } from "../checkpoint/model-config.ts";
import { isMoeArchitecture, moeTensorNames } from "../checkpoint/moe-layout.ts";
import {
  elementCount,
  encodeSafetensors,
  type LazyTensorToWrite,
  type SafetensorsDtype,
  type TensorToWrite,
  writeSafetensorsStreaming,
} from "../checkpoint/safetensors.ts";
import {
  BOS_TOKEN_ID,
  BYTE_LEVEL_BASE_VOCAB,
  byteLevelTokenizerJson,
  EOS_TOKEN_ID,
} from "./byte-level-tokenizer.ts";

export interface RandomCheckpointSpec {
  architecture: ModelArchitecture;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  /** Written to config.json as `head_dim`. @default hiddenSize / numHeads */
  headDim?: number;
  tieWordEmbeddings: boolean;
  /** @default 10000 */
  ropeTheta?: number;
  /** Written to config.json as `rope_scaling`, with transformers' keys. @default none */
  ropeScaling?: RopeScaling;
  /** @default 1e-6 */
  rmsNormEps?: number;
  /** @default 2048 */
  maxPositions?: number;
  /** MoE families (mixtral, qwen3_moe) only. @default 4 */
  numExperts?: number;
  /** MoE families (mixtral, qwen3_moe) only. @default 2 */
  numExpertsPerToken?: number;
  /** qwen3_moe only: written as `norm_topk_prob`. @default false */
  normTopkProb?: boolean;
  seed: number;
  dtype: SafetensorsDtype;
  /** Split the weights over this many files with an index. @default 1 */
  shards?: number;
  /**
   * Multiplies every linear weight's standard deviation 1/sqrt(in). 1 gives untied logits
   * of standard deviation ~1; 2 makes next-token distributions clearly peaked. @default 1
   */
  initScale?: number;
  /**
   * Standard deviation of the embedding table. 1 (like a trained model's embeddings after
   * the first norm) gives tied heads logits of standard deviation ~sqrt(hidden); real
   * shapes use ~2/sqrt(hidden), which keeps logits in a trained model's range. @default 1
   */
  embeddingStd?: number;
  /**
   * Written as config.json instead of one built from the fields above, which must describe
   * the same shape: a real model's config with all its keys (see real-model-configs.ts).
   * @default built from the fields
   */
  configJson?: Readonly<Record<string, unknown>>;
  /** Extra merges for tokenizer.json (see byteLevelTokenizerJson); they must fit in vocabSize. @default [] */
  tokenizerWords?: readonly (string | Uint8Array)[];
}

const DEFAULT_EXPERTS = 4;
const DEFAULT_EXPERTS_PER_TOKEN = 2;

/** A small, fast pseudo-random generator (mulberry32) with Gaussian samples (Box–Muller). */
class SeededRandom {
  private state: number;
  private spare: number | undefined;

  constructor(seed: number) {
    this.state = seed >>> 0 || 1;
  }

  uniform(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  gaussian(): number {
    if (this.spare !== undefined) {
      const value = this.spare;
      this.spare = undefined;
      return value;
    }
    const u = Math.max(this.uniform(), 1e-12);
    const v = this.uniform();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }

  /** `length` samples of N(mean, std²), drawn in order. */
  normal(length: number, mean: number, std: number): Float32Array {
    const out = new Float32Array(length);
    for (let i = 0; i < length; i++) out[i] = mean + this.gaussian() * std;
    return out;
  }
}

/** Throws InvalidArgumentError naming the field when a spec cannot describe a valid model. */
export function validateRandomCheckpointSpec(spec: RandomCheckpointSpec): void {
  const positive = (field: keyof RandomCheckpointSpec, value: number | undefined) => {
    if (value !== undefined && !(Number.isInteger(value) && value > 0))
      throw new InvalidArgumentError(field, `must be a positive integer, got ${value}`);
  };
  for (const field of [
    "vocabSize",
    "hiddenSize",
    "intermediateSize",
    "numLayers",
    "numHeads",
    "numKvHeads",
    "headDim",
    "maxPositions",
    "numExperts",
    "numExpertsPerToken",
    "shards",
  ] as const)
    positive(field, spec[field]);
  if (spec.numHeads % spec.numKvHeads !== 0)
    throw new InvalidArgumentError(
      "numKvHeads",
      `${spec.numKvHeads} does not divide numHeads ${spec.numHeads}`,
    );
  if (spec.headDim === undefined && spec.hiddenSize % spec.numHeads !== 0)
    throw new InvalidArgumentError(
      "numHeads",
      `${spec.numHeads} does not divide hiddenSize ${spec.hiddenSize}`,
    );
  if (spec.embeddingStd !== undefined && !(Number.isFinite(spec.embeddingStd) && spec.embeddingStd > 0))
    throw new InvalidArgumentError("embeddingStd", `must be a positive number, got ${spec.embeddingStd}`);
  if (headDimOf(spec) % 2 !== 0)
    throw new InvalidArgumentError("headDim", `must be even for rotary embeddings, got ${headDimOf(spec)}`);
  if (isMoeArchitecture(spec.architecture) && expertsPerTokenOf(spec) > expertsOf(spec))
    throw new InvalidArgumentError("numExpertsPerToken", `exceeds numExperts ${expertsOf(spec)}`);
}

function headDimOf(spec: RandomCheckpointSpec): number {
  return spec.headDim ?? spec.hiddenSize / spec.numHeads;
}
function expertsOf(spec: RandomCheckpointSpec): number {
  return spec.numExperts ?? DEFAULT_EXPERTS;
}
function expertsPerTokenOf(spec: RandomCheckpointSpec): number {
  return spec.numExpertsPerToken ?? DEFAULT_EXPERTS_PER_TOKEN;
}

/**
 * The tensors `writeRandomCheckpoint` writes, in file order, as fp32 before any dtype
 * rounding: tests compare loaded weights against these.
 */
export function randomCheckpointTensors(spec: RandomCheckpointSpec): TensorToWrite[] {
  return randomCheckpointPlan(spec).map(({ name, shape, values }) => ({ name, shape, data: values() }));
}

/**
 * The same tensors, each drawn only when `values` is called: one seeded stream feeds them
 * all, so the calls must come in file order, once each (anything else would silently give
 * other weights, so it throws). What lets a checkpoint of many GB be written a tensor at a
 * time.
 */
function randomCheckpointPlan(spec: RandomCheckpointSpec): LazyTensorToWrite[] {
  validateRandomCheckpointSpec(spec);
  const random = new SeededRandom(spec.seed);
  const { hiddenSize: h, intermediateSize: m, vocabSize: v, numHeads, numKvHeads } = spec;
  const headDim = headDimOf(spec);
  const scale = spec.initScale ?? 1;
  const tensors: LazyTensorToWrite[] = [];
  let drawn = 0;
  const push = (name: string, shape: number[], mean: number, std: number) => {
    const index = tensors.length;
    const length = elementCount(shape);
    tensors.push({
      name,
      shape,
      values: () => {
        if (drawn !== index)
          throw new InternalError(`random checkpoint: tensor ${index} (${name}) drawn out of order`);
        drawn++;
        return random.normal(length, mean, std);
      },
    });
  };
  // The draw order below fixes every checkpoint's bytes: append new tensors, never reorder.
  const linear = (name: string, rows: number, cols: number) =>
    push(name, [rows, cols], 0, scale / Math.sqrt(cols));
  const vector = (name: string, length: number, mean: number, std: number) => push(name, [length], mean, std);

  // Embeddings ~ N(0, 1) like a trained model's after the first norm; tied heads then give
  // logits of standard deviation ~sqrt(hidden), i.e. confident predictions.
  push("model.embed_tokens.weight", [v, h], 0, spec.embeddingStd ?? 1);
  for (let i = 0; i < spec.numLayers; i++) {
    const p = `model.layers.${i}`;
    vector(`${p}.input_layernorm.weight`, h, 1, 0.1);
    linear(`${p}.self_attn.q_proj.weight`, numHeads * headDim, h);
    linear(`${p}.self_attn.k_proj.weight`, numKvHeads * headDim, h);
    linear(`${p}.self_attn.v_proj.weight`, numKvHeads * headDim, h);
    linear(`${p}.self_attn.o_proj.weight`, h, numHeads * headDim);
    if (spec.architecture === "qwen2") {
      vector(`${p}.self_attn.q_proj.bias`, numHeads * headDim, 0, 0.1);
      vector(`${p}.self_attn.k_proj.bias`, numKvHeads * headDim, 0, 0.1);
      vector(`${p}.self_attn.v_proj.bias`, numKvHeads * headDim, 0, 0.1);
    }
    if (hasQueryKeyNorm(spec.architecture)) {
      vector(`${p}.self_attn.q_norm.weight`, headDim, 1, 0.1);
      vector(`${p}.self_attn.k_norm.weight`, headDim, 1, 0.1);
    }
    vector(`${p}.post_attention_layernorm.weight`, h, 1, 0.1);
    const moe = moeTensorNames(spec.architecture, i, expertsOf(spec));
    if (moe) {
      linear(moe.router, expertsOf(spec), h);
      for (const expert of moe.experts) {
        linear(expert.gate, m, h);
        linear(expert.down, h, m);
        linear(expert.up, m, h);
      }
    } else {
      linear(`${p}.mlp.gate_proj.weight`, m, h);
      linear(`${p}.mlp.up_proj.weight`, m, h);
      linear(`${p}.mlp.down_proj.weight`, h, m);
    }
  }
  vector("model.norm.weight", h, 1, 0.1);
  if (!spec.tieWordEmbeddings) linear("lm_head.weight", v, h);
  return tensors;
}

/** The config.json a spec is written with. */
export function randomCheckpointConfigJson(spec: RandomCheckpointSpec): Record<string, unknown> {
  if (spec.configJson) return { ...spec.configJson };
  const config: Record<string, unknown> = {
    architectures: [ARCHITECTURE_CLASS[spec.architecture]],
    model_type: spec.architecture,
    vocab_size: spec.vocabSize,
    hidden_size: spec.hiddenSize,
    intermediate_size: spec.intermediateSize,
    num_hidden_layers: spec.numLayers,
    num_attention_heads: spec.numHeads,
    num_key_value_heads: spec.numKvHeads,
    head_dim: headDimOf(spec),
    hidden_act: "silu",
    max_position_embeddings: spec.maxPositions ?? 2048,
    rms_norm_eps: spec.rmsNormEps ?? 1e-6,
    rope_theta: spec.ropeTheta ?? 10000,
    tie_word_embeddings: spec.tieWordEmbeddings,
    bos_token_id: BOS_TOKEN_ID,
    eos_token_id: EOS_TOKEN_ID,
    torch_dtype: { F32: "float32", F16: "float16", BF16: "bfloat16" }[spec.dtype],
  };
  if (spec.ropeScaling) config.rope_scaling = ropeScalingJson(spec.ropeScaling);
  if (spec.architecture === "mixtral") {
    config.num_local_experts = expertsOf(spec);
    config.num_experts_per_tok = expertsPerTokenOf(spec);
  }
  if (spec.architecture === "qwen3_moe") {
    config.num_experts = expertsOf(spec);
    config.num_experts_per_tok = expertsPerTokenOf(spec);
    config.moe_intermediate_size = spec.intermediateSize;
    config.norm_topk_prob = spec.normTopkProb ?? false;
    config.decoder_sparse_step = 1;
    config.mlp_only_layers = [];
  }
  return config;
}

/** `rope_scaling` as transformers writes it. */
function ropeScalingJson(scaling: RopeScaling): Record<string, unknown> {
  if (scaling.type === "linear") return { rope_type: "linear", factor: scaling.factor };
  return {
    rope_type: "llama3",
    factor: scaling.factor,
    low_freq_factor: scaling.lowFreqFactor,
    high_freq_factor: scaling.highFreqFactor,
    original_max_position_embeddings: scaling.originalMaxPositions,
  };
}

const ARCHITECTURE_CLASS: Record<ModelArchitecture, string> = {
  llama: "LlamaForCausalLM",
  mistral: "MistralForCausalLM",
  qwen2: "Qwen2ForCausalLM",
  qwen3: "Qwen3ForCausalLM",
  mixtral: "MixtralForCausalLM",
  qwen3_moe: "Qwen3MoeForCausalLM",
};

/**
 * Writes config.json, the weights (model.safetensors, or `shards` files
 * model-0000k-of-0000n.safetensors with model.safetensors.index.json) and, when the
 * vocabulary has room for the 258 byte-level tokens, tokenizer.json.
 */
export async function writeRandomCheckpoint(dir: string, spec: RandomCheckpointSpec): Promise<void> {
  const tensors = randomCheckpointPlan(spec);
  const tokenizer = byteLevelTokenizerJson({ words: spec.tokenizerWords ?? [] });
  const tokenizerVocab = Object.keys((tokenizer.model as { vocab: object }).vocab).length;
  if (spec.tokenizerWords?.length && tokenizerVocab > spec.vocabSize)
    throw new InvalidArgumentError(
      "tokenizerWords",
      `need ${tokenizerVocab} tokens, more than vocabSize ${spec.vocabSize}`,
    );

  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, "config.json"), JSON.stringify(randomCheckpointConfigJson(spec), null, 2));
  if (spec.vocabSize >= BYTE_LEVEL_BASE_VOCAB)
    await writeFile(join(dir, "tokenizer.json"), JSON.stringify(tokenizer));

  const shards = spec.shards ?? 1;
  if (shards <= 1) {
    await writeSafetensorsStreaming(join(dir, "model.safetensors"), tensors, spec.dtype);
    return;
  }
  const weightMap: Record<string, string> = {};
  const perShard = Math.ceil(tensors.length / shards);
  // total_size counts tensor bytes, as transformers writes it.
  let totalSize = 0;
  for (let s = 0; s < shards; s++) {
    const fileName = `model-${String(s + 1).padStart(5, "0")}-of-${String(shards).padStart(5, "0")}.safetensors`;
    const part = tensors.slice(s * perShard, (s + 1) * perShard);
    for (const t of part) weightMap[t.name] = fileName;
    for (const t of part) totalSize += elementCount(t.shape) * (spec.dtype === "F32" ? 4 : 2);
    await writeSafetensorsStreaming(join(dir, fileName), part, spec.dtype);
  }
  await writeFile(
    join(dir, "model.safetensors.index.json"),
    JSON.stringify({ metadata: { total_size: totalSize }, weight_map: weightMap }, null, 2),
  );
}

/** Parameters of the model a spec describes (tied embeddings counted once). */
export function parameterCount(spec: RandomCheckpointSpec): number {
  return randomCheckpointShapes(spec).reduce((sum, shape) => sum + elementCount(shape), 0);
}

function randomCheckpointShapes(spec: RandomCheckpointSpec): number[][] {
  const { hiddenSize: h, intermediateSize: m, vocabSize: v, numHeads, numKvHeads } = spec;
  const q = numHeads * headDimOf(spec);
  const kv = numKvHeads * headDimOf(spec);
  const mlp = isMoeArchitecture(spec.architecture) ? expertsOf(spec) * 3 : 3;
  const layer = [[h], [q, h], [kv, h], [kv, h], [h, q], [h], ...Array.from({ length: mlp }, () => [m, h])];
  if (spec.architecture === "qwen2") layer.push([q], [kv], [kv]);
  if (hasQueryKeyNorm(spec.architecture)) layer.push([headDimOf(spec)], [headDimOf(spec)]);
  if (isMoeArchitecture(spec.architecture)) layer.push([expertsOf(spec), h]);
  const shapes = [[v, h], [h], ...Array.from({ length: spec.numLayers }, () => layer).flat()];
  if (!spec.tieWordEmbeddings) shapes.push([v, h]);
  return shapes;
}

const TINY_BASE = {
  architecture: "llama",
  vocabSize: 300,
  hiddenSize: 64,
  intermediateSize: 112,
  numLayers: 4,
  numHeads: 4,
  numKvHeads: 2,
  tieWordEmbeddings: false,
  seed: 11,
  dtype: "F32",
} as const satisfies RandomCheckpointSpec;

// Named shapes tests share, each catching a different indexing mistake in the engine. All
// have a 300-token vocabulary (the byte-level tokenizer plus room) unless noted.

/** Llama, hidden 64, 4 heads over 2 KV heads (GQA ratio 2), 4 layers, untied. */
export const TINY_LLAMA: Readonly<RandomCheckpointSpec> = TINY_BASE;
/** Multi-head attention: as many KV heads as query heads (ratio 1). */
export const TINY_MHA: Readonly<RandomCheckpointSpec> = { ...TINY_BASE, numKvHeads: 4, seed: 12 };
/** GQA ratio 4: hidden 128, 8 heads over 2 KV heads. */
export const TINY_GQA4: Readonly<RandomCheckpointSpec> = {
  ...TINY_BASE,
  hiddenSize: 128,
  numHeads: 8,
  numKvHeads: 2,
  seed: 13,
};
/** Sizes that are not powers of two: hidden 72 = 6 heads × 12, 3 KV heads, intermediate 97, vocab 301. */
export const ODD_HIDDEN: Readonly<RandomCheckpointSpec> = {
  ...TINY_BASE,
  hiddenSize: 72,
  numHeads: 6,
  numKvHeads: 3,
  headDim: 12,
  intermediateSize: 97,
  vocabSize: 301,
  seed: 14,
};
/** Mistral with lm_head tied to the embedding (no lm_head.weight in the file). */
export const TINY_TIED: Readonly<RandomCheckpointSpec> = {
  ...TINY_BASE,
  architecture: "mistral",
  tieWordEmbeddings: true,
  seed: 15,
};
/** Qwen2: biases on the q/k/v projections. */
export const TINY_QWEN2: Readonly<RandomCheckpointSpec> = { ...TINY_BASE, architecture: "qwen2", seed: 16 };
/** Mixtral: 4 experts, top-2 routing, expert intermediate 64, 2 layers. */
export const TINY_MIXTRAL: Readonly<RandomCheckpointSpec> = {
  ...TINY_BASE,
  architecture: "mixtral",
  intermediateSize: 64,
  numLayers: 2,
  numExperts: 4,
  numExpertsPerToken: 2,
  seed: 19,
};

/** Every preset by name, for tests that run over all of them. */
export const PRESET_SPECS: Readonly<Record<string, Readonly<RandomCheckpointSpec>>> = {
  TINY_LLAMA,
  TINY_MHA,
  TINY_GQA4,
  ODD_HIDDEN,
  TINY_TIED,
  TINY_QWEN2,
  TINY_MIXTRAL,
};

/**
 * A Llama spec of roughly `targetParams` parameters, for benchmarks: ≤2M gives ~1M,
 * ≤40M gives ~24M, anything larger ~107M. All use tied embeddings and GQA (as small
 * modern models do, e.g. SmolLM, Qwen2-0.5B) and F16 files; the largest is shaped like
 * GPT-2 small (hidden 768, 12 layers, 12 heads) with a 32K vocabulary, 4 KV heads and
 * intermediate 2304. The shapes are fixed: benchmark figures in the docs refer to them.
 */
export function sizedLlamaSpec(targetParams: number): RandomCheckpointSpec {
  const common = { architecture: "llama" as const, seed: 1, dtype: "F16" as const, maxPositions: 2048 };
  if (targetParams <= 2e6) {
    return {
      ...common,
      vocabSize: 2048,
      hiddenSize: 128,
      intermediateSize: 352,
      numLayers: 4,
      numHeads: 4,
      numKvHeads: 2,
      tieWordEmbeddings: true,
    };
  }
  if (targetParams <= 40e6) {
    return {
      ...common,
      vocabSize: 16384,
      hiddenSize: 384,
      intermediateSize: 1152,
      numLayers: 10,
      numHeads: 6,
      numKvHeads: 2,
      tieWordEmbeddings: true,
    };
  }
  return {
    ...common,
    vocabSize: 32000,
    hiddenSize: 768,
    intermediateSize: 2304,
    numLayers: 12,
    numHeads: 12,
    numKvHeads: 4,
    tieWordEmbeddings: true,
  };
}

export interface RandomExitAdaptersSpec {
  /** Exit layers to give an adapter; tandem.json lists them as the model's exit_layers. */
  layers: readonly number[];
  /** Each adapter's SwiGLU width. */
  width: number;
  /** Exit layers (of `layers`) whose adapter attends too: its attention half, the model's heads. @default none */
  attending?: readonly number[];
  seed: number;
  /** @default "F32" */
  dtype?: SafetensorsDtype;
}

/**
 * Writes random exit adapters (checkpoint/exit-adapters.ts) beside a checkpoint written by
 * writeRandomCheckpoint: exit-adapters.safetensors, and a tandem.json that names it with
 * `layers` as the exits. down_proj is drawn like any linear (not zero, as training starts
 * it), so an adapter visibly changes its exit's logits.
 */
export async function writeRandomExitAdapters(
  dir: string,
  model: RandomCheckpointSpec,
  spec: RandomExitAdaptersSpec,
): Promise<void> {
  const random = new SeededRandom(spec.seed);
  const h = model.hiddenSize;
  const tensors: TensorToWrite[] = [];
  for (const layer of spec.layers) {
    const p = `exit_adapters.${layer}`;
    tensors.push({ name: `${p}.norm.weight`, shape: [h], data: random.normal(h, 1, 0.1) });
    for (const [name, rows, cols] of [
      ["gate_proj", spec.width, h],
      ["up_proj", spec.width, h],
      ["down_proj", h, spec.width],
    ] as const)
      tensors.push({
        name: `${p}.mlp.${name}.weight`,
        shape: [rows, cols],
        data: random.normal(rows * cols, 0, 1 / Math.sqrt(cols)),
      });
  }
  // Drawn after every MLP half, so adapters without attention draw what they always did.
  const headDim = headDimOf(model);
  const qDim = model.numHeads * headDim;
  const kvDim = model.numKvHeads * headDim;
  for (const layer of spec.attending ?? []) {
    if (!spec.layers.includes(layer))
      throw new InvalidArgumentError("attending", `exit ${layer} is not one of the adapters' layers`);
    const p = `exit_adapters.${layer}`;
    tensors.push({ name: `${p}.input_layernorm.weight`, shape: [h], data: random.normal(h, 1, 0.1) });
    for (const [name, rows, cols] of [
      ["q_proj", qDim, h],
      ["k_proj", kvDim, h],
      ["v_proj", kvDim, h],
      ["o_proj", h, qDim],
    ] as const)
      tensors.push({
        name: `${p}.self_attn.${name}.weight`,
        shape: [rows, cols],
        data: random.normal(rows * cols, 0, 1 / Math.sqrt(cols)),
      });
  }
  await writeFile(join(dir, "exit-adapters.safetensors"), encodeSafetensors(tensors, spec.dtype ?? "F32"));
  await writeFile(
    join(dir, "tandem.json"),
    JSON.stringify({
      exit_layers: spec.layers,
      recommended_split: Math.max(...spec.layers),
      exit_adapters: "exit-adapters.safetensors",
    }),
  );
}
