/**
 * The names of a segment graph's inputs and outputs: the contract between the graph
 * writer (segment-graph.ts) and the engine that feeds and reads them (segment-model.ts).
 * Both take every name from here, so a misspelt one is a compile error rather than an
 * ONNX Runtime "invalid feed" or a missing output at run time.
 *
 *   inputs   hidden_in float [batch, seq, hidden]    the embedded tokens where fromLayer = 0
 *                                                   (the engine looks them up: embedding-table-layout.ts)
 *            seqlens_k int32 [batch]                 total length of each row minus one
 *            total_sequence_length int32 []          max total length over rows
 *            past_key.L / past_value.L float [batch, kvHeads, past, headDim]
 *            head_positions int64 [1]              (positions "tail") how many of each row's
 *                                                   last positions the exits and head evaluate
 *   outputs  present_key.L / present_value.L float [batch, kvHeads, past, headDim]
 *                                                   (fused attention) the past with each row's
 *                                                   new positions written in: the engine binds
 *                                                   it to the past's own buffer
 *            new_key.L / new_value.L float [batch, kvHeads, seq, headDim]  (plain-operator
 *                                                   attention) the keys (rotated) and values of
 *                                                   each row's new positions, for the engine to append
 *            hidden_out float [batch, seq, hidden]   (outputHidden)
 *            hidden_after.K float [batch, seq, hidden] (hiddenTaps)
 *            exit.K.token int64, exit.K.prob / .margin / .entropy float [batch, positions]
 *                                                   (positions: 1, seq or head_positions)
 *            exit.K.kl_previous float [batch, positions]  KL divergence from the nearest earlier
 *                                                   exit of the graph (absent at its first exit
 *                                                   and at the final head)
 *            exit.K.logits float [batch, positions, vocab] (logits)
 *            expert_choices.L int64 [batch, seq, k]  (MoE layers)
 *            expert_weights.L float [batch, seq, k]  (host-routed MoE layer) the router's
 *                                                   weight of each chosen expert
 *            moe_input.L float [batch, seq, hidden]  (host-routed) the experts' input (normed)
 *            moe_residual.L float [batch, seq, hidden] (host-routed) the hidden state after
 *                                                   attention, which the experts' sum is added to
 * An expert graph (one expert of one layer, host-routed MoE) maps expert_in float [rows,
 * hidden] to expert_out float [rows, hidden]: the expert's SwiGLU, unweighted.
 * Rows of a batch may have different past lengths: past is right-padded (and may be longer
 * than any row: a cache with room) and row b's new keys belong at position
 * seqlens_k[b] - seq + 1 (GroupQueryAttention's convention). Either way no run hands back
 * a copy of a layer's whole cache: GroupQueryAttention writes into the buffer it reads
 * (present bound to past), the plain path returns only the new positions.
 *
 * A cached graph keeps the names it was built with and its cache key does not cover
 * them: changing a name needs a bump of SEGMENT_GRAPH_VERSION.
 */

/** What each exit head outputs, per row and evaluated position (logits only when asked for). */
export type ExitOutputKind = "token" | "prob" | "margin" | "entropy" | "kl_previous" | "logits";

export const GRAPH_IO = Object.freeze({
  hiddenIn: "hidden_in",
  seqlensK: "seqlens_k",
  totalSequenceLength: "total_sequence_length",
  headPositions: "head_positions",
  hiddenOut: "hidden_out",
  pastKey: (layer: number) => `past_key.${layer}` as const,
  pastValue: (layer: number) => `past_value.${layer}` as const,
  /** Keys of the positions a run adds, per row: what the caller appends to its cache. */
  newKey: (layer: number) => `new_key.${layer}` as const,
  newValue: (layer: number) => `new_value.${layer}` as const,
  /** The cache with the run's positions written in (fused attention): bound to past_key's buffer. */
  presentKey: (layer: number) => `present_key.${layer}` as const,
  presentValue: (layer: number) => `present_value.${layer}` as const,
  /** The hidden state after `layers` decoder layers (a hidden tap). */
  hiddenAfter: (layers: number) => `hidden_after.${layers}` as const,
  /** The experts chosen per token in an MoE layer. */
  expertChoices: (layer: number) => `expert_choices.${layer}` as const,
  /** Host-routed MoE: the router's weight of each chosen expert, [batch, seq, k]. */
  expertWeights: (layer: number) => `expert_weights.${layer}` as const,
  /** Host-routed MoE: the experts' input (the post-attention norm's output). */
  moeInput: (layer: number) => `moe_input.${layer}` as const,
  /** Host-routed MoE: the residual stream after attention. */
  moeResidual: (layer: number) => `moe_residual.${layer}` as const,
  expertIn: "expert_in",
  expertOut: "expert_out",
  /** An output of the exit head after `afterLayer` layers (the final head: afterLayer = numLayers). */
  exitOutput: (afterLayer: number, kind: ExitOutputKind) => `exit.${afterLayer}.${kind}` as const,
} as const);
