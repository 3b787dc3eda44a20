/**
 * The names of a segment graph's inputs and outputs: the contract between the graph
 * writer (segment-graph.ts) and the engine that feeds and reads them (segment-model.ts).
 * Both take every name from here, so a misspelt one is a compile error rather than an
 * ONNX Runtime "invalid feed" or a missing output at run time.
 *
 *   inputs   hidden_in float [batch, seq, hidden]    the embedded tokens where fromLayer = 0
 *                                                   (the engine looks them up: embedding-table-layout.ts)
 *            past_lengths int64 [batch]              positions each row holds before the run
 *            past_key.L / past_value.L float [batch, kvHeads, past, headDim]
 *            exit.K.past_key / exit.K.past_value float [batch, kvHeads, past, headDim]
 *                                                   the cache of exit K's adapter where it
 *                                                   attends (exit-adapters.ts)
 *            head_positions int64 [1]              (positions "tail") how many of each row's
 *                                                   last positions the exits and head evaluate
 *   outputs  new_key.L / new_value.L float [batch, kvHeads, seq, headDim]  the keys (rotated)
 *                                                   and values of each row's new positions, for
 *                                                   the engine to append to its cache
 *            exit.K.new_key / exit.K.new_value       the same for an attending exit adapter
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
 * than any row: a cache with room), row b's positions past_lengths[b] on are masked, and
 * its new keys belong at position past_lengths[b]. No run hands back a copy of a layer's
 * cache, only the new positions: onnxruntime-node copies every output it returns.
 *
 * A cached graph keeps the names it was built with and its cache key does not cover
 * them: changing a name needs a bump of SEGMENT_GRAPH_VERSION.
 */

/** What each exit head outputs, per row and evaluated position (logits only when asked for). */
export type ExitOutputKind = "token" | "prob" | "margin" | "entropy" | "kl_previous" | "logits";

export const GRAPH_IO = Object.freeze({
  hiddenIn: "hidden_in",
  pastLengths: "past_lengths",
  headPositions: "head_positions",
  hiddenOut: "hidden_out",
  pastKey: (layer: number) => `past_key.${layer}` as const,
  pastValue: (layer: number) => `past_value.${layer}` as const,
  /** Keys of the positions a run adds, per row: what the caller appends to its cache. */
  newKey: (layer: number) => `new_key.${layer}` as const,
  newValue: (layer: number) => `new_value.${layer}` as const,
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
  /** The cache of an exit adapter that attends (exit-adapters.ts): as a layer's, its own. */
  exitPastKey: (afterLayer: number) => `exit.${afterLayer}.past_key` as const,
  exitPastValue: (afterLayer: number) => `exit.${afterLayer}.past_value` as const,
  exitNewKey: (afterLayer: number) => `exit.${afterLayer}.new_key` as const,
  exitNewValue: (afterLayer: number) => `exit.${afterLayer}.new_value` as const,
  /** An output of the exit head after `afterLayer` layers (the final head: afterLayer = numLayers). */
  exitOutput: (afterLayer: number, kind: ExitOutputKind) => `exit.${afterLayer}.${kind}` as const,
} as const);
