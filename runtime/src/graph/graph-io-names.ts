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
 *   outputs  new_key.L / new_value.L float [batch, kvHeads, seq, headDim]  the keys (rotated)
 *                                                   and values of each row's new positions
 *            hidden_out float [batch, seq, hidden]   (outputHidden)
 *            hidden_after.K float [batch, seq, hidden] (hiddenTaps)
 *            exit.K.token int64, exit.K.prob / .margin / .entropy float [batch, positions]
 *            exit.K.logits float [batch, positions, vocab] (logits)
 *            expert_choices.L int64 [batch, seq, k]  (MoE layers)
 * Rows of a batch may have different past lengths: past is right-padded (and may be longer
 * than any row: a cache with room) and row b's new keys belong at position
 * seqlens_k[b] - seq + 1 (GroupQueryAttention's convention). The full present cache stays
 * inside the graph: only the new positions leave it, so a decode step hands back a few KB
 * instead of a copy of every layer's whole cache.
 *
 * A cached graph keeps the names it was built with and its cache key does not cover
 * them: changing a name needs a bump of SEGMENT_GRAPH_VERSION.
 */

/** What each exit head outputs, per row and evaluated position (logits only when asked for). */
export type ExitOutputKind = "token" | "prob" | "margin" | "entropy" | "logits";

export const GRAPH_IO = Object.freeze({
  hiddenIn: "hidden_in",
  seqlensK: "seqlens_k",
  totalSequenceLength: "total_sequence_length",
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
  /** An output of the exit head after `afterLayer` layers (the final head: afterLayer = numLayers). */
  exitOutput: (afterLayer: number, kind: ExitOutputKind) => `exit.${afterLayer}.${kind}` as const,
} as const);
