/**
 * Small deterministic models for tests of the reference forward and of the graphs checked
 * against it, built in memory (no checkpoint files, no loader): the same config and seed
 * give the same weights.
 */
import { hasQueryKeyNorm, type ModelConfig } from "../checkpoint/model-config.ts";
import { moeTensorNames } from "../checkpoint/moe-layout.ts";
import type { ExpertWeights, LayerWeights, ModelWeights, WeightTensor } from "../checkpoint/model-weights.ts";

/** A seeded generator (mulberry32) with Gaussian samples (Box–Muller). */
export class SeededRandom {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** Uniform in [0, 1). */
  uniform(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let z = this.state;
    z = Math.imul(z ^ (z >>> 15), z | 1);
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61);
    return ((z ^ (z >>> 14)) >>> 0) / 4294967296;
  }

  gaussian(): number {
    const u = 1 - this.uniform();
    const v = this.uniform();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }

  /** `length` samples of N(mean, std²). */
  normal(length: number, mean: number, std: number): Float32Array {
    const out = new Float32Array(length);
    for (let i = 0; i < length; i++) out[i] = mean + std * this.gaussian();
    return out;
  }
}

/** A tiny Llama-shaped config (2 layers, 4 query heads over 2 kv heads), with `overrides`. */
export function tinyConfig(overrides: Partial<ModelConfig> = {}): ModelConfig {
  const config: ModelConfig = {
    architecture: "llama",
    vocabSize: 50,
    hiddenSize: 32,
    intermediateSize: 40,
    numLayers: 2,
    numHeads: 4,
    numKvHeads: 2,
    headDim: 8,
    rmsNormEps: 1e-6,
    ropeTheta: 10000,
    maxPositions: 256,
    tieWordEmbeddings: false,
    attentionBias: false,
    queryKeyNorm: hasQueryKeyNorm(overrides.architecture ?? "llama"),
    ...overrides,
  };
  if (config.architecture === "mixtral" || config.architecture === "qwen3_moe") {
    config.numExperts ??= 4;
    config.numExpertsPerToken ??= 2;
    config.normalizeTopK ??= config.architecture === "mixtral";
  }
  return config;
}

/**
 * Random weights in the layout ModelWeights promises (HF `[out, in]`), scaled like a trained
 * model's: linear weights ~ N(0, 1/in), embeddings ~ N(0, 1), norm weights ~ N(1, 0.1²),
 * biases ~ N(0, 0.1²) when `config.attentionBias`, q/k norms ~ N(1, 0.1²) when
 * `config.queryKeyNorm`. With tied embeddings `lmHead` is
 * `embedTokens` itself.
 */
export function randomWeights(config: ModelConfig, seed: number): ModelWeights {
  const random = new SeededRandom(seed);
  const h = config.hiddenSize;
  const inter = config.intermediateSize;
  const qDim = config.numHeads * config.headDim;
  const kvDim = config.numKvHeads * config.headDim;
  const matrix = (name: string, rows: number, cols: number): WeightTensor => ({
    name,
    shape: [rows, cols],
    data: random.normal(rows * cols, 0, 1 / Math.sqrt(cols)),
  });
  const vector = (name: string, length: number, mean: number, std: number): WeightTensor => ({
    name,
    shape: [length],
    data: random.normal(length, mean, std),
  });

  const embedTokens: WeightTensor = {
    name: "model.embed_tokens.weight",
    shape: [config.vocabSize, h],
    data: random.normal(config.vocabSize * h, 0, 1),
  };
  const layers: LayerWeights[] = [];
  for (let l = 0; l < config.numLayers; l++) {
    const p = `model.layers.${l}`;
    const layer: LayerWeights = {
      inputNorm: vector(`${p}.input_layernorm.weight`, h, 1, 0.1),
      qProj: matrix(`${p}.self_attn.q_proj.weight`, qDim, h),
      kProj: matrix(`${p}.self_attn.k_proj.weight`, kvDim, h),
      vProj: matrix(`${p}.self_attn.v_proj.weight`, kvDim, h),
      oProj: matrix(`${p}.self_attn.o_proj.weight`, h, qDim),
      postAttentionNorm: vector(`${p}.post_attention_layernorm.weight`, h, 1, 0.1),
    };
    if (config.attentionBias) {
      layer.qBias = vector(`${p}.self_attn.q_proj.bias`, qDim, 0, 0.1);
      layer.kBias = vector(`${p}.self_attn.k_proj.bias`, kvDim, 0, 0.1);
      layer.vBias = vector(`${p}.self_attn.v_proj.bias`, kvDim, 0, 0.1);
    }
    if (config.queryKeyNorm) {
      layer.qNorm = vector(`${p}.self_attn.q_norm.weight`, config.headDim, 1, 0.1);
      layer.kNorm = vector(`${p}.self_attn.k_norm.weight`, config.headDim, 1, 0.1);
    }
    const moe = moeTensorNames(config.architecture, l, config.numExperts ?? 0);
    if (moe) {
      layer.router = matrix(moe.router, config.numExperts!, h);
      layer.experts = moe.experts.map((names): ExpertWeights => ({
        gateProj: matrix(names.gate, inter, h),
        upProj: matrix(names.up, inter, h),
        downProj: matrix(names.down, h, inter),
      }));
    } else {
      layer.gateProj = matrix(`${p}.mlp.gate_proj.weight`, inter, h);
      layer.upProj = matrix(`${p}.mlp.up_proj.weight`, inter, h);
      layer.downProj = matrix(`${p}.mlp.down_proj.weight`, h, inter);
    }
    layers.push(layer);
  }
  const finalNorm = vector("model.norm.weight", h, 1, 0.1);
  const lmHead = config.tieWordEmbeddings ? embedTokens : matrix("lm_head.weight", config.vocabSize, h);
  return { embedTokens, layers, finalNorm, lmHead };
}
