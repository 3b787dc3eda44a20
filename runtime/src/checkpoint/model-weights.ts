/**
 * A checkpoint's weights, checked against its config (presence, dtype, shape) and decoded to fp32.
 * Linear weights keep the Hugging Face layout `[out_features, in_features]`.
 */
import type { ExitAdapterWeights } from "./exit-adapters.ts";
import type { ModelConfig } from "./model-config.ts";

export interface WeightTensor {
  /** The checkpoint's tensor name, e.g. `model.layers.3.self_attn.q_proj.weight`. */
  name: string;
  shape: number[];
  data: Float32Array;
  /**
   * Drops the decoded values; reading `data` again decodes them again. Present on tensors
   * decoded from a checkpoint file, absent on tensors made in memory.
   */
  release?(): void;
  /**
   * Rows [begin, end) of a 2-D tensor as fp32, decoded on their own and not kept: how a
   * graph build converts a large table in blocks. Present on tensors of a checkpoint file.
   */
  rows?(begin: number, end: number): Float32Array;
}

export interface ExpertWeights {
  gateProj: WeightTensor; // w1 [intermediate, hidden]
  upProj: WeightTensor; // w3 [intermediate, hidden]
  downProj: WeightTensor; // w2 [hidden, intermediate]
}

export interface LayerWeights {
  inputNorm: WeightTensor; // [hidden]
  qProj: WeightTensor; // [heads*headDim, hidden]
  kProj: WeightTensor; // [kvHeads*headDim, hidden]
  vProj: WeightTensor; // [kvHeads*headDim, hidden]
  oProj: WeightTensor; // [hidden, heads*headDim]
  qBias?: WeightTensor;
  kBias?: WeightTensor;
  vBias?: WeightTensor;
  /** Qwen3's per-head RMSNorm weights, applied to each query and key head before rotary. */
  qNorm?: WeightTensor; // [headDim]
  kNorm?: WeightTensor; // [headDim]
  postAttentionNorm: WeightTensor; // [hidden]
  /** Dense MLP (llama, mistral, qwen2). */
  gateProj?: WeightTensor; // [intermediate, hidden]
  upProj?: WeightTensor; // [intermediate, hidden]
  downProj?: WeightTensor; // [hidden, intermediate]
  /** Mixtral sparse MLP. */
  router?: WeightTensor; // [numExperts, hidden]
  experts?: ExpertWeights[];
}

export interface ModelWeights {
  embedTokens: WeightTensor; // [vocab, hidden]
  layers: LayerWeights[];
  finalNorm: WeightTensor; // [hidden]
  /** Same object as `embedTokens` when embeddings are tied. */
  lmHead: WeightTensor; // [vocab, hidden]
  /** exit layer → its adapter (exit-adapters.ts); absent or empty: plain exits. */
  exitAdapters?: ReadonlyMap<number, ExitAdapterWeights>;
}

export interface Checkpoint {
  /** Directory the checkpoint was loaded from. */
  dir: string;
  config: ModelConfig;
  /**
   * Each tensor decoded to fp32 when its data is first read (a process whose graphs are
   * cached never pays for it, one building a segment pays for that segment); a
   * non-finite value throws TensorMismatchError then.
   */
  readonly weights: ModelWeights;
  /**
   * Drops the tensors decoded so far (a process that has built its graph needs them no
   * more); `weights` decodes again on demand. For checkpoints made in memory, a no-op.
   */
  releaseWeights?(): void;
  /**
   * sha256 (hex) over config.json and the weight files' bytes: identifies these exact
   * weights. An edge and a worker must agree on it; exit adapters, which only the edge
   * runs, are not in it.
   */
  weightsHash: string;
  /** The same over the exit adapters' file, when the model has one: graphs with exits and calibrations are keyed by it too. */
  exitAdaptersHash?: string;
  /** Path of tokenizer.json when the checkpoint has one. */
  tokenizerPath?: string;
}
