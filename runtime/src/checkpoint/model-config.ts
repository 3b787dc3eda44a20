/**
 * The model shape Tandem understands: the Llama family (llama, mistral, qwen2, qwen3) and
 * its sparse MoE variants (mixtral, qwen3_moe). Parsed from a Hugging Face `config.json`.
 */

export type ModelArchitecture = "llama" | "mistral" | "qwen2" | "qwen3" | "mixtral" | "qwen3_moe";

/** Families whose attention norms each head's query and key (Qwen3's `q_norm`/`k_norm`). */
export function hasQueryKeyNorm(architecture: ModelArchitecture): boolean {
  return architecture === "qwen3" || architecture === "qwen3_moe";
}

/** The `rope_scaling` types Tandem computes (rope-frequencies.ts); any other is refused by name. */
export type RopeScaling =
  | { type: "linear"; factor: number }
  | {
      type: "llama3";
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      /** `original_max_position_embeddings`: the context the model was pre-trained at. */
      originalMaxPositions: number;
    };

export interface ModelConfig {
  architecture: ModelArchitecture;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  /** hiddenSize / numHeads unless config.json sets `head_dim`. */
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  /** How the rotary frequencies are scaled for a longer context (config.json's `rope_scaling`). @default none */
  ropeScaling?: RopeScaling;
  maxPositions: number;
  tieWordEmbeddings: boolean;
  /** Qwen2 has biases on q/k/v projections; Llama may set `attention_bias`. */
  attentionBias: boolean;
  /**
   * Qwen3: each head's query and key pass an RMSNorm over head_dim (`q_norm`, `k_norm`)
   * before the rotary embedding.
   */
  queryKeyNorm: boolean;
  bosTokenId?: number;
  eosTokenId?: number[];
  /** MoE models only (mixtral, qwen3_moe): experts per layer, and how many each token uses. */
  numExperts?: number;
  numExpertsPerToken?: number;
  /**
   * MoE: the k chosen experts' router probabilities are renormalised to sum 1 (Mixtral
   * always; Qwen3-MoE's `norm_topk_prob`); otherwise each keeps its softmax probability
   * over all experts.
   */
  normalizeTopK?: boolean;
}
