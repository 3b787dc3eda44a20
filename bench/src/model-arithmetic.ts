/**
 * Sizes of a model worked out from its shape, for the benchmarks' figures: parameters,
 * weight bytes a decode step reads, and the FLOPs of a position.
 */
import type { ModelConfig } from "@tandem/runtime";

/**
 * Weights of one layer's linear projections: attention (q, k, v, o) and the MLP of
 * `experts` experts (gate, up, down each).
 */
export function layerLinearParams(config: ModelConfig, experts: number): number {
  const { hiddenSize: h, intermediateSize: m, numHeads, numKvHeads, headDim } = config;
  return h * (2 * numHeads + 2 * numKvHeads) * headDim + 3 * h * m * experts;
}

/** Every parameter: all experts, norms, embeddings and (when untied) the LM head. */
export function countParams(config: ModelConfig): number {
  const { hiddenSize: h, vocabSize: v, numLayers } = config;
  const embeddings = config.tieWordEmbeddings ? v * h : 2 * v * h;
  return numLayers * (layerLinearParams(config, config.numExperts ?? 1) + 2 * h) + embeddings + h;
}

/** Multiply-adds ×2 of one position through a layer (attention scores left out: small at these lengths). */
export function layerFlops(config: ModelConfig): number {
  return 2 * layerLinearParams(config, config.numExpertsPerToken ?? 1);
}
