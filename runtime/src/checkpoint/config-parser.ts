/**
 * Reads a Hugging Face `config.json` of the Llama family into a ModelConfig. Defaults
 * follow transformers' configuration classes; every missing or ill-typed key throws a
 * ModelConfigError naming the file and the key. Sizes that define the weights' shapes have no
 * default: a config without them is broken, not small.
 */
import { ModelConfigError, UnsupportedError } from "@tandem/common";
import {
  hasQueryKeyNorm,
  type ModelArchitecture,
  type ModelConfig,
  type RopeScaling,
} from "./model-config.ts";

const ARCHITECTURES: ModelArchitecture[] = ["llama", "mistral", "qwen2", "qwen3", "mixtral", "qwen3_moe"];

interface FamilyDefaults {
  rmsNormEps: number;
  ropeTheta: number;
  maxPositions: number;
  tie: boolean;
  /** null: full attention. */
  slidingWindow: number | null;
  /** The head size when config.json has no `head_dim`; undefined: hidden_size / heads. */
  headDim?: number;
}

/** Qwen3Config's and Qwen3MoeConfig's: the head size is its own key (128), not hidden_size / heads. */
const QWEN3_DEFAULTS: FamilyDefaults = {
  rmsNormEps: 1e-6,
  ropeTheta: 10000,
  maxPositions: 32768,
  tie: false,
  slidingWindow: null,
  headDim: 128,
};

/** transformers' defaults per family (LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config, MixtralConfig). */
const FAMILY_DEFAULTS: Record<ModelArchitecture, FamilyDefaults> = {
  llama: { rmsNormEps: 1e-6, ropeTheta: 10000, maxPositions: 2048, tie: false, slidingWindow: null },
  mistral: { rmsNormEps: 1e-6, ropeTheta: 10000, maxPositions: 4096 * 32, tie: false, slidingWindow: 4096 },
  qwen2: { rmsNormEps: 1e-6, ropeTheta: 10000, maxPositions: 32768, tie: false, slidingWindow: null },
  qwen3: QWEN3_DEFAULTS,
  mixtral: { rmsNormEps: 1e-5, ropeTheta: 1e6, maxPositions: 4096 * 32, tie: false, slidingWindow: null },
  qwen3_moe: QWEN3_DEFAULTS,
};

export function parseModelConfig(json: unknown, file: string): ModelConfig {
  if (typeof json !== "object" || json === null || Array.isArray(json))
    throw new ModelConfigError(file, "(root)", "must be a JSON object");
  const raw = json as Record<string, unknown>;

  const modelType = raw.model_type;
  if (typeof modelType !== "string")
    throw new ModelConfigError(file, "model_type", "is missing or not a string");
  if (!ARCHITECTURES.includes(modelType as ModelArchitecture)) {
    throw new ModelConfigError(
      file,
      "model_type",
      `"${modelType}" is not supported (supported: ${ARCHITECTURES.join(", ")})`,
    );
  }
  const architecture = modelType as ModelArchitecture;
  const defaults = FAMILY_DEFAULTS[architecture];

  function int(key: string, fallback?: number): number;
  function int(key: string, fallback: undefined, nullable: true): number | null;
  function int(key: string, fallback?: number, nullable = false): number | null {
    if (nullable && raw[key] === null) return null;
    const value = raw[key] ?? fallback;
    if (value === undefined) throw new ModelConfigError(file, key, "is missing");
    if (typeof value !== "number" || !Number.isInteger(value) || value <= 0)
      throw new ModelConfigError(file, key, `must be a positive integer, got ${JSON.stringify(value)}`);
    return value;
  }
  const num = (key: string, fallback: number): number => {
    const value = raw[key] ?? fallback;
    if (typeof value !== "number" || !Number.isFinite(value) || value <= 0)
      throw new ModelConfigError(file, key, `must be a positive number, got ${JSON.stringify(value)}`);
    return value;
  };
  const bool = (key: string, fallback: boolean): boolean => {
    const value = raw[key] ?? fallback;
    if (typeof value !== "boolean")
      throw new ModelConfigError(file, key, `must be true or false, got ${JSON.stringify(value)}`);
    return value;
  };

  const hiddenSize = int("hidden_size");
  const numHeads = int("num_attention_heads");
  const numKvHeads = int("num_key_value_heads", numHeads);
  if (numHeads % numKvHeads !== 0)
    throw new ModelConfigError(
      file,
      "num_key_value_heads",
      `${numKvHeads} does not divide num_attention_heads ${numHeads}`,
    );
  if (raw.head_dim == null && defaults.headDim === undefined && hiddenSize % numHeads !== 0) {
    throw new ModelConfigError(
      file,
      "num_attention_heads",
      `${numHeads} does not divide hidden_size ${hiddenSize}`,
    );
  }
  const headDim = int("head_dim", defaults.headDim ?? hiddenSize / numHeads);
  if (headDim % 2 !== 0)
    throw new ModelConfigError(file, "head_dim", `must be even for rotary embeddings, got ${headDim}`);

  // Features that change the math: loading such a model and ignoring them would give
  // plausible-looking but wrong tokens, so refuse them by name.
  const ropeScaling = parseRopeScaling(raw.rope_scaling, file);
  if (bool("mlp_bias", false))
    throw new UnsupportedError(`${file}: "mlp_bias" true is not supported (no MLP biases are loaded)`);
  if (
    (architecture === "qwen2" || architecture === "qwen3" || architecture === "qwen3_moe") &&
    bool("use_sliding_window", false)
  )
    throw new UnsupportedError(`${file}: "use_sliding_window" true is not supported`);
  const hiddenAct = raw.hidden_act ?? "silu";
  if (hiddenAct !== "silu")
    throw new ModelConfigError(file, "hidden_act", `must be "silu", got ${JSON.stringify(hiddenAct)}`);

  let maxPositions = int("max_position_embeddings", defaults.maxPositions);
  // Mistral-style sliding-window attention equals full attention while the sequence fits
  // in the window, so capping the context at the window keeps every answer exact.
  if (architecture === "mistral" || architecture === "mixtral") {
    const window =
      raw.sliding_window === undefined ? defaults.slidingWindow : int("sliding_window", undefined, true);
    if (window !== null) maxPositions = Math.min(maxPositions, window);
  }

  const config: ModelConfig = {
    architecture,
    vocabSize: int("vocab_size"),
    hiddenSize,
    intermediateSize: int("intermediate_size"),
    numLayers: int("num_hidden_layers"),
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: num("rms_norm_eps", defaults.rmsNormEps),
    ropeTheta: num("rope_theta", defaults.ropeTheta),
    ...(ropeScaling ? { ropeScaling } : {}),
    maxPositions,
    tieWordEmbeddings: bool("tie_word_embeddings", defaults.tie),
    // Qwen2 always has q/k/v biases; Llama and Qwen3 may opt in with attention_bias.
    attentionBias: architecture === "qwen2" ? true : bool("attention_bias", false),
    queryKeyNorm: hasQueryKeyNorm(architecture),
    bosTokenId: optionalTokenIds(raw.bos_token_id, file, "bos_token_id")?.[0],
    eosTokenId: optionalTokenIds(raw.eos_token_id, file, "eos_token_id"),
  };
  if (architecture === "mixtral" || architecture === "qwen3_moe") {
    const expertsKey = architecture === "mixtral" ? "num_local_experts" : "num_experts";
    config.numExperts = int(expertsKey);
    // transformers' MixtralConfig and Qwen3MoeConfig defaults.
    config.numExpertsPerToken = int("num_experts_per_tok", architecture === "mixtral" ? 2 : 8);
    if (config.numExpertsPerToken > config.numExperts) {
      throw new ModelConfigError(
        file,
        "num_experts_per_tok",
        `${config.numExpertsPerToken} exceeds ${expertsKey} ${config.numExperts}`,
      );
    }
    if (architecture === "mixtral") {
      config.normalizeTopK = true;
    } else {
      // Every layer is sparse (checked below): the MLP width is the experts'.
      config.intermediateSize = int("moe_intermediate_size", 768);
      config.normalizeTopK = bool("norm_topk_prob", false);
      // Dense layers among the sparse ones change which weights a layer has: refused by name.
      if (int("decoder_sparse_step", 1) !== 1)
        throw new UnsupportedError(`${file}: "decoder_sparse_step" other than 1 is not supported`);
      const mlpOnly = raw.mlp_only_layers ?? [];
      if (!Array.isArray(mlpOnly) || mlpOnly.length > 0)
        throw new UnsupportedError(
          `${file}: "mlp_only_layers" (dense layers in an MoE model) is not supported`,
        );
    }
  }
  return config;
}

export function optionalTokenIds(value: unknown, file: string, key: string): number[] | undefined {
  if (value === undefined || value === null) return undefined;
  const list = Array.isArray(value) ? value : [value];
  if (!list.every((v) => Number.isInteger(v) && (v as number) >= 0))
    throw new ModelConfigError(
      file,
      key,
      `must be a token id or a list of them, got ${JSON.stringify(value)}`,
    );
  return list as number[];
}

/**
 * `rope_scaling` as transformers reads it (`rope_type`, or the older `type`): none or
 * "default" → unscaled; "linear" and "llama3" with their keys; any other type (dynamic,
 * yarn, longrope…) changes the math in ways not built, so it is refused by name.
 */
function parseRopeScaling(value: unknown, file: string): RopeScaling | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "object" || Array.isArray(value))
    throw new ModelConfigError(
      file,
      "rope_scaling",
      `must be an object or null, got ${JSON.stringify(value)}`,
    );
  const scaling = value as Record<string, unknown>;
  const type = scaling.rope_type ?? scaling.type;
  const positive = (key: string): number => {
    const number = scaling[key];
    if (typeof number !== "number" || !Number.isFinite(number) || number <= 0)
      throw new ModelConfigError(
        file,
        `rope_scaling.${key}`,
        `must be a positive number, got ${JSON.stringify(number)}`,
      );
    return number;
  };
  switch (type) {
    case "default":
      return undefined;
    case "linear":
      return { type: "linear", factor: positive("factor") };
    case "llama3": {
      const lowFreqFactor = positive("low_freq_factor");
      const highFreqFactor = positive("high_freq_factor");
      if (highFreqFactor <= lowFreqFactor)
        throw new ModelConfigError(
          file,
          "rope_scaling.high_freq_factor",
          `must exceed low_freq_factor ${lowFreqFactor}, got ${highFreqFactor}`,
        );
      const originalMaxPositions = positive("original_max_position_embeddings");
      if (!Number.isInteger(originalMaxPositions))
        throw new ModelConfigError(
          file,
          "rope_scaling.original_max_position_embeddings",
          `must be a positive integer, got ${originalMaxPositions}`,
        );
      return {
        type: "llama3",
        factor: positive("factor"),
        lowFreqFactor,
        highFreqFactor,
        originalMaxPositions,
      };
    }
    default:
      throw new UnsupportedError(
        `${file}: "rope_scaling" of type ${JSON.stringify(type)} is not supported (supported: linear, llama3)`,
      );
  }
}
