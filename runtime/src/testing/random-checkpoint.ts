/**
 * Deterministic random checkpoints in Hugging Face layout (config.json, safetensors,
 * tokenizer.json) for tests and benchmarks: the same spec gives the same bytes. Weights
 * are scaled like a trained model's (linear ~ N(0, 1/in), norms near 1) so activations
 * stay in range and exits are not uniformly unsure.
 */
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { ModelArchitecture } from "../checkpoint/model-config.ts";
import { encodeSafetensors, type SafetensorsDtype, type TensorToWrite } from "../checkpoint/safetensors.ts";
import { byteLevelTokenizerJson } from "./byte-level-tokenizer.ts";

export interface RandomCheckpointSpec {
  architecture: ModelArchitecture;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  /** @default hiddenSize / numHeads */
  headDim?: number;
  tieWordEmbeddings: boolean;
  /** @default 10000 */
  ropeTheta?: number;
  /** @default 1e-6 */
  rmsNormEps?: number;
  /** @default 2048 */
  maxPositions?: number;
  numExperts?: number;
  numExpertsPerToken?: number;
  seed: number;
  dtype: SafetensorsDtype;
  /** Split the weights over this many files with an index. @default 1 */
  shards?: number;
  /** Multiplies every linear weight's standard deviation 1/sqrt(in). @default 1 */
  initScale?: number;
}

/** A small, fast pseudo-random generator (mulberry32) with Gaussian samples. */
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
}

export async function writeRandomCheckpoint(dir: string, spec: RandomCheckpointSpec): Promise<void> {
  await mkdir(dir, { recursive: true });
  const random = new SeededRandom(spec.seed);
  const { hiddenSize: h, intermediateSize: m, vocabSize: v, numHeads, numKvHeads } = spec;
  const headDim = spec.headDim ?? h / numHeads;
  const scale = spec.initScale ?? 1;
  const tensors: TensorToWrite[] = [];
  const linear = (name: string, rows: number, cols: number) => {
    const std = scale / Math.sqrt(cols);
    tensors.push({
      name,
      shape: [rows, cols],
      data: Float32Array.from({ length: rows * cols }, () => random.gaussian() * std),
    });
  };
  const vector = (name: string, length: number, mean: number, std: number) =>
    tensors.push({
      name,
      shape: [length],
      data: Float32Array.from({ length }, () => mean + random.gaussian() * std),
    });

  tensors.push({
    name: "model.embed_tokens.weight",
    shape: [v, h],
    data: Float32Array.from({ length: v * h }, () => random.gaussian()),
  });
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
    vector(`${p}.post_attention_layernorm.weight`, h, 1, 0.1);
    if (spec.architecture === "mixtral") {
      linear(`${p}.block_sparse_moe.gate.weight`, spec.numExperts ?? 4, h);
      for (let e = 0; e < (spec.numExperts ?? 4); e++) {
        linear(`${p}.block_sparse_moe.experts.${e}.w1.weight`, m, h);
        linear(`${p}.block_sparse_moe.experts.${e}.w2.weight`, h, m);
        linear(`${p}.block_sparse_moe.experts.${e}.w3.weight`, m, h);
      }
    } else {
      linear(`${p}.mlp.gate_proj.weight`, m, h);
      linear(`${p}.mlp.up_proj.weight`, m, h);
      linear(`${p}.mlp.down_proj.weight`, h, m);
    }
  }
  vector("model.norm.weight", h, 1, 0.1);
  if (!spec.tieWordEmbeddings) linear("lm_head.weight", v, h);

  const config: Record<string, unknown> = {
    architectures: [architectureClass(spec.architecture)],
    model_type: spec.architecture,
    vocab_size: v,
    hidden_size: h,
    intermediate_size: m,
    num_hidden_layers: spec.numLayers,
    num_attention_heads: numHeads,
    num_key_value_heads: numKvHeads,
    head_dim: headDim,
    hidden_act: "silu",
    max_position_embeddings: spec.maxPositions ?? 2048,
    rms_norm_eps: spec.rmsNormEps ?? 1e-6,
    rope_theta: spec.ropeTheta ?? 10000,
    tie_word_embeddings: spec.tieWordEmbeddings,
    bos_token_id: 0,
    eos_token_id: 1,
    torch_dtype: { F32: "float32", F16: "float16", BF16: "bfloat16" }[spec.dtype],
  };
  if (spec.architecture === "mixtral") {
    config.num_local_experts = spec.numExperts ?? 4;
    config.num_experts_per_tok = spec.numExpertsPerToken ?? 2;
  }
  await writeFile(join(dir, "config.json"), JSON.stringify(config, null, 2));
  if (v >= 258) await writeFile(join(dir, "tokenizer.json"), JSON.stringify(byteLevelTokenizerJson()));

  const shards = spec.shards ?? 1;
  if (shards <= 1) {
    await writeFile(join(dir, "model.safetensors"), encodeSafetensors(tensors, spec.dtype));
    return;
  }
  const weightMap: Record<string, string> = {};
  const perShard = Math.ceil(tensors.length / shards);
  for (let s = 0; s < shards; s++) {
    const fileName = `model-${String(s + 1).padStart(5, "0")}-of-${String(shards).padStart(5, "0")}.safetensors`;
    const part = tensors.slice(s * perShard, (s + 1) * perShard);
    for (const t of part) weightMap[t.name] = fileName;
    await writeFile(join(dir, fileName), encodeSafetensors(part, spec.dtype));
  }
  await writeFile(
    join(dir, "model.safetensors.index.json"),
    JSON.stringify({ metadata: {}, weight_map: weightMap }, null, 2),
  );
}

function architectureClass(architecture: ModelArchitecture): string {
  return {
    llama: "LlamaForCausalLM",
    mistral: "MistralForCausalLM",
    qwen2: "Qwen2ForCausalLM",
    mixtral: "MixtralForCausalLM",
  }[architecture];
}

/**
 * A Llama spec of roughly `targetParams` parameters, for benchmarks: ~1M, ~25M and ~110M
 * (the last shaped like GPT-2 small / SmolLM: hidden 768, 12 layers, 32K vocabulary).
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
