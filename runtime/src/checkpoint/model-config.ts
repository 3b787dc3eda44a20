/**
 * The model shape Tandem understands: the Llama family (llama, mistral, qwen2) and,
 * for the MoE demo, mixtral. Parsed from a Hugging Face `config.json`.
 */

export type ModelArchitecture = "llama" | "mistral" | "qwen2" | "mixtral";

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
  maxPositions: number;
  tieWordEmbeddings: boolean;
  /** Qwen2 has biases on q/k/v projections; Llama may set `attention_bias`. */
  attentionBias: boolean;
  bosTokenId?: number;
  eosTokenId?: number[];
  /** Mixtral only. */
  numExperts?: number;
  numExpertsPerToken?: number;
}
