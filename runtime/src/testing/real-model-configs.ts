/**
 * The config.json files of the open models people deploy, key for key as their authors
 * published them, so tests and benchmarks run random checkpoints of the real shapes
 * through the same parser a user's download goes through. Only `num_hidden_layers` is
 * changed (by `realShapeSpec`) to keep a checkpoint small enough for a test.
 */
import { parseModelConfig } from "../checkpoint/config-parser.ts";
import type { SafetensorsDtype } from "../checkpoint/safetensors.ts";
import type { RandomCheckpointSpec } from "./random-checkpoint.ts";

export type RealModelName =
  | "Llama-3.2-1B"
  | "TinyLlama-1.1B"
  | "SmolLM2-360M"
  | "Qwen2.5-0.5B"
  | "Qwen2.5-7B"
  | "Mistral-7B-v0.3"
  | "Qwen3-0.6B"
  | "Qwen3-30B-A3B"
  | "Mixtral-8x7B-v0.1";

export const REAL_MODEL_CONFIGS: Readonly<Record<RealModelName, Readonly<Record<string, unknown>>>> = {
  "Llama-3.2-1B": {
    architectures: ["LlamaForCausalLM"],
    attention_bias: false,
    attention_dropout: 0.0,
    bos_token_id: 128000,
    eos_token_id: 128001,
    head_dim: 64,
    hidden_act: "silu",
    hidden_size: 2048,
    initializer_range: 0.02,
    intermediate_size: 8192,
    max_position_embeddings: 131072,
    mlp_bias: false,
    model_type: "llama",
    num_attention_heads: 32,
    num_hidden_layers: 16,
    num_key_value_heads: 8,
    pretraining_tp: 1,
    rms_norm_eps: 1e-5,
    rope_scaling: {
      factor: 32.0,
      high_freq_factor: 4.0,
      low_freq_factor: 1.0,
      original_max_position_embeddings: 8192,
      rope_type: "llama3",
    },
    rope_theta: 500000.0,
    tie_word_embeddings: true,
    torch_dtype: "bfloat16",
    transformers_version: "4.45.0.dev0",
    use_cache: true,
    vocab_size: 128256,
  },
  // Untied, Llama 2's tokenizer and rope.
  "TinyLlama-1.1B": {
    architectures: ["LlamaForCausalLM"],
    attention_bias: false,
    bos_token_id: 1,
    eos_token_id: 2,
    hidden_act: "silu",
    hidden_size: 2048,
    initializer_range: 0.02,
    intermediate_size: 5632,
    max_position_embeddings: 2048,
    model_type: "llama",
    num_attention_heads: 32,
    num_hidden_layers: 22,
    num_key_value_heads: 4,
    pretraining_tp: 1,
    rms_norm_eps: 1e-5,
    rope_scaling: null,
    rope_theta: 10000.0,
    tie_word_embeddings: false,
    torch_dtype: "bfloat16",
    transformers_version: "4.35.0",
    use_cache: true,
    vocab_size: 32000,
  },
  // 15 heads over 5 KV heads: neither a power of two.
  "SmolLM2-360M": {
    architectures: ["LlamaForCausalLM"],
    attention_bias: false,
    attention_dropout: 0.0,
    bos_token_id: 0,
    eos_token_id: 0,
    hidden_act: "silu",
    hidden_size: 960,
    initializer_range: 0.02,
    intermediate_size: 2560,
    is_llama_config: true,
    max_position_embeddings: 8192,
    model_type: "llama",
    num_attention_heads: 15,
    num_hidden_layers: 32,
    num_key_value_heads: 5,
    pretraining_tp: 1,
    rms_norm_eps: 1e-5,
    rope_interleaved: false,
    rope_scaling: null,
    rope_theta: 100000,
    tie_word_embeddings: true,
    torch_dtype: "bfloat16",
    transformers_version: "4.40.1",
    use_cache: true,
    vocab_size: 49152,
  },
  // Tied, q/k/v biases, 14 heads over 2 KV heads.
  "Qwen2.5-0.5B": {
    architectures: ["Qwen2ForCausalLM"],
    attention_dropout: 0.0,
    bos_token_id: 151643,
    eos_token_id: 151643,
    hidden_act: "silu",
    hidden_size: 896,
    initializer_range: 0.02,
    intermediate_size: 4864,
    max_position_embeddings: 32768,
    max_window_layers: 24,
    model_type: "qwen2",
    num_attention_heads: 14,
    num_hidden_layers: 24,
    num_key_value_heads: 2,
    rms_norm_eps: 1e-6,
    rope_theta: 1000000.0,
    sliding_window: 32768,
    tie_word_embeddings: true,
    torch_dtype: "bfloat16",
    transformers_version: "4.40.1",
    use_cache: true,
    use_mrope: false,
    use_sliding_window: false,
    vocab_size: 151936,
  },
  // Untied, q/k/v biases; a 1.1B-parameter embedding and head on their own.
  "Qwen2.5-7B": {
    architectures: ["Qwen2ForCausalLM"],
    attention_dropout: 0.0,
    bos_token_id: 151643,
    eos_token_id: 151643,
    hidden_act: "silu",
    hidden_size: 3584,
    initializer_range: 0.02,
    intermediate_size: 18944,
    max_position_embeddings: 131072,
    max_window_layers: 28,
    model_type: "qwen2",
    num_attention_heads: 28,
    num_hidden_layers: 28,
    num_key_value_heads: 4,
    rms_norm_eps: 1e-6,
    rope_theta: 1000000.0,
    sliding_window: 131072,
    tie_word_embeddings: false,
    torch_dtype: "bfloat16",
    transformers_version: "4.43.1",
    use_cache: true,
    use_sliding_window: false,
    vocab_size: 152064,
  },
  "Mistral-7B-v0.3": {
    architectures: ["MistralForCausalLM"],
    attention_dropout: 0.0,
    bos_token_id: 1,
    eos_token_id: 2,
    hidden_act: "silu",
    hidden_size: 4096,
    initializer_range: 0.02,
    intermediate_size: 14336,
    max_position_embeddings: 32768,
    model_type: "mistral",
    num_attention_heads: 32,
    num_hidden_layers: 32,
    num_key_value_heads: 8,
    rms_norm_eps: 1e-5,
    rope_theta: 1000000.0,
    sliding_window: null,
    tie_word_embeddings: false,
    torch_dtype: "bfloat16",
    transformers_version: "4.42.0.dev0",
    use_cache: true,
    vocab_size: 32768,
  },
  // Per-head q/k norms; head_dim 128 with hidden 1024 (16 heads × 128 = 2048 ≠ hidden).
  "Qwen3-0.6B": {
    architectures: ["Qwen3ForCausalLM"],
    attention_bias: false,
    attention_dropout: 0.0,
    bos_token_id: 151643,
    eos_token_id: 151645,
    head_dim: 128,
    hidden_act: "silu",
    hidden_size: 1024,
    initializer_range: 0.02,
    intermediate_size: 3072,
    max_position_embeddings: 40960,
    max_window_layers: 28,
    model_type: "qwen3",
    num_attention_heads: 16,
    num_hidden_layers: 28,
    num_key_value_heads: 8,
    rms_norm_eps: 1e-6,
    rope_scaling: null,
    rope_theta: 1000000,
    sliding_window: null,
    tie_word_embeddings: true,
    torch_dtype: "bfloat16",
    transformers_version: "4.51.0",
    use_cache: true,
    use_sliding_window: false,
    vocab_size: 151936,
  },
  // 8 experts of width 14336 per layer, top 2; Mistral's attention without its window.
  "Mixtral-8x7B-v0.1": {
    architectures: ["MixtralForCausalLM"],
    attention_dropout: 0.0,
    bos_token_id: 1,
    eos_token_id: 2,
    hidden_act: "silu",
    hidden_size: 4096,
    initializer_range: 0.02,
    intermediate_size: 14336,
    max_position_embeddings: 32768,
    model_type: "mixtral",
    num_attention_heads: 32,
    num_experts_per_tok: 2,
    num_hidden_layers: 32,
    num_key_value_heads: 8,
    num_local_experts: 8,
    output_router_logits: false,
    rms_norm_eps: 1e-5,
    rope_theta: 1000000.0,
    router_aux_loss_coef: 0.02,
    sliding_window: null,
    tie_word_embeddings: false,
    torch_dtype: "bfloat16",
    transformers_version: "4.36.0.dev0",
    use_cache: true,
    vocab_size: 32000,
  },
  // Qwen3's MoE: 128 experts of width 768 per layer, 8 per token, renormalised.
  "Qwen3-30B-A3B": {
    architectures: ["Qwen3MoeForCausalLM"],
    attention_bias: false,
    attention_dropout: 0.0,
    bos_token_id: 151643,
    decoder_sparse_step: 1,
    eos_token_id: 151645,
    head_dim: 128,
    hidden_act: "silu",
    hidden_size: 2048,
    initializer_range: 0.02,
    intermediate_size: 6144,
    max_position_embeddings: 40960,
    max_window_layers: 48,
    mlp_only_layers: [],
    model_type: "qwen3_moe",
    moe_intermediate_size: 768,
    norm_topk_prob: true,
    num_attention_heads: 32,
    num_experts: 128,
    num_experts_per_tok: 8,
    num_hidden_layers: 48,
    num_key_value_heads: 4,
    output_router_logits: false,
    rms_norm_eps: 1e-6,
    rope_scaling: null,
    rope_theta: 1000000.0,
    router_aux_loss_coef: 0.001,
    sliding_window: null,
    tie_word_embeddings: false,
    torch_dtype: "bfloat16",
    transformers_version: "4.51.0",
    use_cache: true,
    use_sliding_window: false,
    vocab_size: 151936,
  },
};

export interface RealShapeOptions {
  /** Decoder layers to write (the real model's count when omitted). */
  numLayers?: number;
  /** @default 1 */
  seed?: number;
  /** @default "BF16" (how these models are published) */
  dtype?: SafetensorsDtype;
}

/**
 * A random-checkpoint spec of a real model's shape, written with that model's config.json
 * (only `num_hidden_layers` changed). The shape is read through parseModelConfig, so a
 * config the parser refuses cannot be written either.
 */
export function realShapeSpec(name: RealModelName, options: RealShapeOptions = {}): RandomCheckpointSpec {
  const source = REAL_MODEL_CONFIGS[name];
  const configJson = { ...source, num_hidden_layers: options.numLayers ?? source.num_hidden_layers };
  const config = parseModelConfig(configJson, `${name}/config.json`);
  return {
    architecture: config.architecture,
    vocabSize: config.vocabSize,
    hiddenSize: config.hiddenSize,
    intermediateSize: config.intermediateSize,
    numLayers: config.numLayers,
    numHeads: config.numHeads,
    numKvHeads: config.numKvHeads,
    headDim: config.headDim,
    tieWordEmbeddings: config.tieWordEmbeddings,
    ropeTheta: config.ropeTheta,
    ...(config.ropeScaling ? { ropeScaling: config.ropeScaling } : {}),
    rmsNormEps: config.rmsNormEps,
    maxPositions: config.maxPositions,
    embeddingStd: 2 / Math.sqrt(config.hiddenSize),
    ...(config.numExperts
      ? {
          numExperts: config.numExperts,
          numExpertsPerToken: config.numExpertsPerToken,
          normTopkProb: config.normalizeTopK,
        }
      : {}),
    seed: options.seed ?? 1,
    dtype: options.dtype ?? "BF16",
    configJson,
  };
}
