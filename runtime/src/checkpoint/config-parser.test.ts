import { describe, expect, it } from "vitest";
import { ModelConfigError, UnsupportedError } from "@tandem/common";
import { REAL_MODEL_CONFIGS } from "../testing/real-model-configs.ts";
import { parseModelConfig } from "./config-parser.ts";

const FILE = "/models/x/config.json";

/** The keys every family needs; everything else has a transformers default. */
const REQUIRED = {
  vocab_size: 1000,
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 2,
  num_attention_heads: 4,
};
const llama = { model_type: "llama", ...REQUIRED };
const mistral = { model_type: "mistral", ...REQUIRED };
const qwen2 = { model_type: "qwen2", ...REQUIRED };
const qwen3 = { model_type: "qwen3", ...REQUIRED };
const mixtral = { model_type: "mixtral", ...REQUIRED, num_local_experts: 8 };

function configError(json: unknown): ModelConfigError {
  try {
    parseModelConfig(json, FILE);
  } catch (error) {
    if (error instanceof ModelConfigError) return error;
    throw error;
  }
  throw new Error("expected a ModelConfigError");
}

describe("parseModelConfig defaults (as transformers' config classes)", () => {
  it("llama: MHA, head_dim = hidden/heads, rope 10000, eps 1e-6, 2048 positions, untied, no biases", () => {
    expect(parseModelConfig(llama, FILE)).toEqual({
      architecture: "llama",
      vocabSize: 1000,
      hiddenSize: 64,
      intermediateSize: 128,
      numLayers: 2,
      numHeads: 4,
      numKvHeads: 4,
      headDim: 16,
      rmsNormEps: 1e-6,
      ropeTheta: 10000,
      maxPositions: 2048,
      tieWordEmbeddings: false,
      attentionBias: false,
      queryKeyNorm: false,
      bosTokenId: undefined,
      eosTokenId: undefined,
    });
  });

  it("llama: reads GQA, an explicit head_dim, attention_bias, tied embeddings and token ids", () => {
    const config = parseModelConfig(
      {
        ...llama,
        num_key_value_heads: 2,
        head_dim: 24,
        attention_bias: true,
        tie_word_embeddings: true,
        rope_theta: 500000,
        rms_norm_eps: 1e-5,
        max_position_embeddings: 8192,
        bos_token_id: 128000,
        eos_token_id: [128001, 128009],
        rope_scaling: null,
        mlp_bias: false,
      },
      FILE,
    );
    expect(config).toMatchObject({
      numKvHeads: 2,
      headDim: 24,
      attentionBias: true,
      tieWordEmbeddings: true,
      ropeTheta: 500000,
      rmsNormEps: 1e-5,
      maxPositions: 8192,
      bosTokenId: 128000,
      eosTokenId: [128001, 128009],
    });
  });

  it("llama 3.2 1B's real config.json: GQA, tied, rope_theta 500000, llama3 rope scaling", () => {
    const llama32 = REAL_MODEL_CONFIGS["Llama-3.2-1B"];
    expect(parseModelConfig(llama32, FILE)).toMatchObject({
      hiddenSize: 2048,
      numHeads: 32,
      numKvHeads: 8,
      headDim: 64,
      vocabSize: 128256,
      tieWordEmbeddings: true,
      ropeTheta: 500000,
      maxPositions: 131072,
      ropeScaling: {
        type: "llama3",
        factor: 32,
        lowFreqFactor: 1,
        highFreqFactor: 4,
        originalMaxPositions: 8192,
      },
    });
  });

  it('rope_scaling: linear with its factor (older configs say `type`); "default" and null scale nothing', () => {
    expect(
      parseModelConfig({ ...llama, rope_scaling: { type: "linear", factor: 4 } }, FILE).ropeScaling,
    ).toEqual({
      type: "linear",
      factor: 4,
    });
    expect(
      parseModelConfig({ ...llama, rope_scaling: { rope_type: "default" } }, FILE).ropeScaling,
    ).toBeUndefined();
    expect(parseModelConfig({ ...llama, rope_scaling: null }, FILE).ropeScaling).toBeUndefined();
  });

  it("llama: a single eos_token_id becomes a one-element list", () => {
    expect(parseModelConfig({ ...llama, eos_token_id: 2 }, FILE).eosTokenId).toEqual([2]);
  });

  it("mistral: caps the context at the sliding window (4096 when absent), none when null", () => {
    expect(parseModelConfig(mistral, FILE).maxPositions).toBe(4096);
    expect(
      parseModelConfig({ ...mistral, max_position_embeddings: 32768, sliding_window: 1024 }, FILE)
        .maxPositions,
    ).toBe(1024);
    expect(parseModelConfig({ ...mistral, sliding_window: null }, FILE).maxPositions).toBe(4096 * 32);
    expect(parseModelConfig(mistral, FILE)).toMatchObject({
      ropeTheta: 10000,
      rmsNormEps: 1e-6,
      attentionBias: false,
    });
  });

  it("qwen2: always has q/k/v biases, 32768 positions", () => {
    expect(parseModelConfig(qwen2, FILE)).toMatchObject({ attentionBias: true, maxPositions: 32768 });
    expect(parseModelConfig({ ...qwen2, attention_bias: false }, FILE).attentionBias).toBe(true);
    expect(
      parseModelConfig({ ...qwen2, use_sliding_window: false, sliding_window: 4096 }, FILE).maxPositions,
    ).toBe(32768);
  });

  it("qwen3: per-head q/k norms, head_dim 128 unless given (not hidden/heads), no biases unless asked", () => {
    expect(parseModelConfig(qwen3, FILE)).toMatchObject({
      architecture: "qwen3",
      headDim: 128,
      queryKeyNorm: true,
      attentionBias: false,
      maxPositions: 32768,
    });
    expect(parseModelConfig({ ...qwen3, head_dim: 64, attention_bias: true }, FILE)).toMatchObject({
      headDim: 64,
      attentionBias: true,
    });
    // hidden 64 over 3 heads does not divide, and need not: the head size is its own key.
    expect(parseModelConfig({ ...qwen3, num_attention_heads: 3, num_key_value_heads: 1 }, FILE).headDim).toBe(
      128,
    );
    expect(() => parseModelConfig({ ...qwen3, use_sliding_window: true }, FILE)).toThrow(UnsupportedError);
  });

  it("Qwen3-0.6B's real config.json: 16 heads of 128 over a hidden of 1024, tied, rope 1e6", () => {
    expect(parseModelConfig(REAL_MODEL_CONFIGS["Qwen3-0.6B"], FILE)).toMatchObject({
      architecture: "qwen3",
      hiddenSize: 1024,
      numHeads: 16,
      numKvHeads: 8,
      headDim: 128,
      queryKeyNorm: true,
      tieWordEmbeddings: true,
      ropeTheta: 1e6,
      maxPositions: 40960,
      vocabSize: 151936,
    });
  });

  it("every real config Tandem is tested on parses, to its published shape", () => {
    const shapes = Object.fromEntries(
      Object.entries(REAL_MODEL_CONFIGS).map(([name, json]) => {
        const c = parseModelConfig(json, FILE);
        return [
          name,
          [c.architecture, c.hiddenSize, c.numHeads, c.numKvHeads, c.headDim, c.tieWordEmbeddings],
        ];
      }),
    );
    expect(shapes).toEqual({
      "Llama-3.2-1B": ["llama", 2048, 32, 8, 64, true],
      "TinyLlama-1.1B": ["llama", 2048, 32, 4, 64, false],
      "SmolLM2-360M": ["llama", 960, 15, 5, 64, true],
      "Qwen2.5-0.5B": ["qwen2", 896, 14, 2, 64, true],
      "Qwen2.5-7B": ["qwen2", 3584, 28, 4, 128, false],
      "Mistral-7B-v0.3": ["mistral", 4096, 32, 8, 128, false],
      "Qwen3-0.6B": ["qwen3", 1024, 16, 8, 128, true],
      "Qwen3-30B-A3B": ["qwen3_moe", 2048, 32, 4, 128, false],
      "Mixtral-8x7B-v0.1": ["mixtral", 4096, 32, 8, 128, false],
    });
  });

  it("mixtral: rope 1e6, eps 1e-5, experts and top-2 routing by default", () => {
    expect(parseModelConfig(mixtral, FILE)).toMatchObject({
      ropeTheta: 1e6,
      rmsNormEps: 1e-5,
      numExperts: 8,
      numExpertsPerToken: 2,
      maxPositions: 4096 * 32,
    });
    expect(parseModelConfig({ ...mixtral, num_experts_per_tok: 1 }, FILE).numExpertsPerToken).toBe(1);
  });

  it("qwen3_moe: experts of moe_intermediate_size, 8 per token, q/k norms; norm_topk_prob false unless set", () => {
    const qwen3Moe = { model_type: "qwen3_moe", ...REQUIRED, num_experts: 16, moe_intermediate_size: 48 };
    expect(parseModelConfig(qwen3Moe, FILE)).toMatchObject({
      architecture: "qwen3_moe",
      numExperts: 16,
      numExpertsPerToken: 8,
      intermediateSize: 48,
      normalizeTopK: false,
      queryKeyNorm: true,
      headDim: 128,
    });
    expect(parseModelConfig({ ...qwen3Moe, norm_topk_prob: true }, FILE).normalizeTopK).toBe(true);
    expect(parseModelConfig(mixtral, FILE).normalizeTopK).toBe(true);
    expect(parseModelConfig(REAL_MODEL_CONFIGS["Qwen3-30B-A3B"], FILE)).toMatchObject({
      numExperts: 128,
      numExpertsPerToken: 8,
      intermediateSize: 768,
      normalizeTopK: true,
      numLayers: 48,
    });
  });

  it("dense families carry no expert fields", () => {
    expect(parseModelConfig(llama, FILE).numExperts).toBeUndefined();
  });
});

describe("parseModelConfig errors name the file and the key", () => {
  for (const family of [llama, mistral, qwen2, mixtral]) {
    for (const key of Object.keys(REQUIRED)) {
      it(`${family.model_type}: "${key}" missing`, () => {
        const json: Record<string, unknown> = { ...family };
        delete json[key];
        const error = configError(json);
        expect(error.key).toBe(key);
        expect(error.file).toBe(FILE);
        expect(error.message).toBe(`${FILE}: "${key}" is missing`);
      });
    }
  }

  const cases: [string, unknown, string, RegExp][] = [
    ["a non-object config", [1, 2], "(root)", /must be a JSON object/],
    [
      "llama3 rope scaling without its factor",
      {
        ...llama,
        rope_scaling: {
          rope_type: "llama3",
          low_freq_factor: 1,
          high_freq_factor: 4,
          original_max_position_embeddings: 8192,
        },
      },
      "rope_scaling.factor",
      /must be a positive number, got undefined/,
    ],
    [
      "llama3 rope scaling whose high frequency factor is not above the low",
      {
        ...llama,
        rope_scaling: {
          rope_type: "llama3",
          factor: 8,
          low_freq_factor: 4,
          high_freq_factor: 1,
          original_max_position_embeddings: 8192,
        },
      },
      "rope_scaling.high_freq_factor",
      /must exceed low_freq_factor 4, got 1/,
    ],
    ["no model_type", { ...REQUIRED }, "model_type", /is missing or not a string/],
    [
      "an unsupported model_type",
      { ...llama, model_type: "gpt2" },
      "model_type",
      /"gpt2" is not supported \(supported: llama, mistral, qwen2, qwen3, mixtral, qwen3_moe\)/,
    ],
    [
      "a size given as a string",
      { ...llama, hidden_size: "64" },
      "hidden_size",
      /must be a positive integer, got "64"/,
    ],
    [
      "a fractional size",
      { ...llama, intermediate_size: 12.5 },
      "intermediate_size",
      /must be a positive integer/,
    ],
    [
      "a zero layer count",
      { ...llama, num_hidden_layers: 0 },
      "num_hidden_layers",
      /must be a positive integer/,
    ],
    [
      "KV heads that do not divide the heads",
      { ...llama, num_key_value_heads: 3 },
      "num_key_value_heads",
      /3 does not divide num_attention_heads 4/,
    ],
    [
      "heads that do not divide hidden",
      { ...llama, num_attention_heads: 5 },
      "num_attention_heads",
      /5 does not divide hidden_size 64/,
    ],
    ["an odd head_dim", { ...llama, head_dim: 15 }, "head_dim", /must be even/],
    ["a non-SiLU activation", { ...llama, hidden_act: "gelu" }, "hidden_act", /must be "silu"/],
    ["a negative rms_norm_eps", { ...llama, rms_norm_eps: -1 }, "rms_norm_eps", /must be a positive number/],
    ["rope_theta as a string", { ...llama, rope_theta: "1e4" }, "rope_theta", /must be a positive number/],
    [
      "tie_word_embeddings as a string",
      { ...llama, tie_word_embeddings: "yes" },
      "tie_word_embeddings",
      /must be true or false/,
    ],
    [
      "attention_bias as a number",
      { ...llama, attention_bias: 1 },
      "attention_bias",
      /must be true or false/,
    ],
    [
      "an ill-typed eos_token_id",
      { ...llama, eos_token_id: ["2"] },
      "eos_token_id",
      /must be a token id or a list of them/,
    ],
    [
      "an ill-typed sliding_window",
      { ...mistral, sliding_window: "4k" },
      "sliding_window",
      /must be a positive integer/,
    ],
    [
      "mixtral without num_local_experts",
      { ...mixtral, num_local_experts: undefined },
      "num_local_experts",
      /is missing/,
    ],
    [
      "more experts per token than experts",
      { ...mixtral, num_experts_per_tok: 9 },
      "num_experts_per_tok",
      /9 exceeds num_local_experts 8/,
    ],
  ];
  for (const [name, json, key, message] of cases) {
    it(`rejects ${name}`, () => {
      const error = configError(json);
      expect(error.key).toBe(key);
      expect(error.message.startsWith(`${FILE}: "${key}" `)).toBe(true);
      expect(error.message).toMatch(message);
    });
  }

  const unsupported: [string, Record<string, unknown>, RegExp][] = [
    [
      "rope_scaling of a type not built (yarn)",
      { ...llama, rope_scaling: { rope_type: "yarn", factor: 4, original_max_position_embeddings: 4096 } },
      /"rope_scaling" of type "yarn" is not supported \(supported: linear, llama3\)/,
    ],
    ["mlp_bias", { ...llama, mlp_bias: true }, /"mlp_bias" true is not supported/],
    [
      "qwen2's use_sliding_window",
      { ...qwen2, use_sliding_window: true },
      /"use_sliding_window" true is not supported/,
    ],
    [
      "qwen3_moe's dense layers among sparse ones (decoder_sparse_step)",
      { model_type: "qwen3_moe", ...REQUIRED, num_experts: 8, decoder_sparse_step: 2 },
      /"decoder_sparse_step" other than 1 is not supported/,
    ],
    [
      "qwen3_moe's dense layers among sparse ones (mlp_only_layers)",
      { model_type: "qwen3_moe", ...REQUIRED, num_experts: 8, mlp_only_layers: [0] },
      /"mlp_only_layers" \(dense layers in an MoE model\) is not supported/,
    ],
  ];
  for (const [name, json, message] of unsupported) {
    it(`refuses ${name}, which would change the math, with UnsupportedError`, () => {
      expect(() => parseModelConfig(json, FILE)).toThrow(UnsupportedError);
      expect(() => parseModelConfig(json, FILE)).toThrow(
        new RegExp(`^${FILE.replace(/[./]/g, "\\$&")}: ${message.source}`),
      );
    });
  }
});
