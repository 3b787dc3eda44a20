/**
 * What a segment graph computes: a range of decoder layers, what goes in (token ids or
 * hidden states), which exits it reports, and which hidden states it hands out.
 */
import type { ModelConfig } from "../checkpoint/model-config.ts";
import { InvalidArgumentError } from "@tandem/common";

export const HEAD_POSITIONS = ["last", "all", "tail"] as const;
export type HeadPositions = (typeof HEAD_POSITIONS)[number];

/**
 * How a segment's linear weights are stored and multiplied.
 * - `fp32`: as trained, MatMul.
 * - `int8`: 8-bit blocks of quantBlockSize values with a scale each (ggml's Q8_0),
 *   MatMulNBits with activations quantized in blocks too: llama.cpp's Q8_0 quality.
 * - `w8a8`: int8 per output channel and activations quantized per token (row), an integer
 *   GEMM (MatMulIntegerToFloat): several times int8's prefill and batched-decode speed on
 *   CPUs without VNNI, some agreement given up where activations have outlier channels.
 * - `int4`: 4-bit blocks (ggml's Q4_0 grid), MatMulNBits.
 * Every quantized format keeps the embedding table and the LM head in 8-bit blocks; int4's
 * head may be 4-bit instead (SegmentSpec.int4HeadBits).
 */
export const WEIGHT_FORMATS = ["fp32", "int8", "w8a8", "int4"] as const;

/**
 * How an MoE block runs its experts.
 * - `sparse`: each expert runs only on the rows routed to it: k/E of the MLP work.
 * - `all-experts`: every expert runs on every row and the unchosen ones' weights are
 *   zero: exact, E/k times the work. What MoE segments ran before; the `moe` benchmark
 *   measures it against `sparse`.
 * - `host`: the experts are not in the graph. The segment ends at its last layer's router
 *   and hands out what the experts need (GRAPH_IO.moe*); the engine runs the chosen
 *   experts elsewhere (an expert cache under a memory budget, other workers) and the next
 *   piece of the model takes the combined hidden state. Only the segment's last layer may
 *   be MoE, and nothing may be read after it; a piece of no layers (fromLayer = toLayer)
 *   evaluates exits and the final head on its input. See engine/host-routed-moe-model.ts.
 */
export const MOE_EXECUTIONS = ["sparse", "all-experts", "host"] as const;
export type MoeExecution = (typeof MOE_EXECUTIONS)[number];
export type WeightFormat = (typeof WEIGHT_FORMATS)[number];
export const DEFAULT_WEIGHT_FORMAT: WeightFormat = "fp32";

/**
 * A map from an exit layer's hidden state towards the last layer's ("Jump to Conclusions"),
 * applied to the unit-RMS hidden state: h' = (h / rms(h)) · weight + bias.
 */
export interface LinearExitMap {
  /** Row-major [hidden, hidden]. */
  weight: Float32Array;
  bias: Float32Array;
}

export interface ExitHeadSpec {
  /** Number of decoder layers run before this exit: the head reads the hidden state after layer `afterLayer - 1`. */
  afterLayer: number;
  /** Without a map the exit is the model's own final norm + LM head on that hidden state. */
  linearMap?: LinearExitMap;
}

export interface SegmentSpec {
  /** First decoder layer of the segment (0 means the segment embeds token ids). */
  fromLayer: number;
  /** One past the last decoder layer. */
  toLayer: number;
  /** Early exits inside the segment: each `afterLayer` in (fromLayer, toLayer]. */
  exits: ExitHeadSpec[];
  /** The model's final norm + LM head after `toLayer` (requires toLayer = numLayers). */
  finalHead: boolean;
  /** Output the hidden state after the segment's last layer (the split hidden state on an edge). */
  outputHidden: boolean;
  /** Extra hidden states to output, after these many layers (for calibration). */
  hiddenTaps: number[];
  /**
   * Where exits and the head are evaluated: only the last position of each row, every
   * position, or the last `headPositions` of each row, a number each run gives (a cloud
   * worker checks the edge's drafted tokens on the rows before them; see
   * protocol/escalation-protocol.ts).
   */
  positions: HeadPositions;
  /** Also output full logits for every exit and the head. */
  logits: boolean;
  weightFormat: WeightFormat;
  /** MatMulNBits block size for int8/int4 weights. @default 32 */
  quantBlockSize?: number;
  /**
   * Bits of an int4 segment's LM head (other formats' heads are 8-bit), which its exits and
   * final head share. @default defaultInt4HeadBits(spec): 8 with the final head, 4 without
   */
  int4HeadBits?: Int4HeadBits;
  /** How MoE blocks run their experts (dense models ignore it). @default "sparse" */
  moeExecution: MoeExecution;
}

export const DEFAULT_QUANT_BLOCK_SIZE = 32;
export const INT4_HEAD_BITS = [4, 8] as const;
export type Int4HeadBits = (typeof INT4_HEAD_BITS)[number];

/**
 * An int4 segment's head bits unless the spec says: 8 where it answers with the model's
 * final head, as llama-quantize raises a Q4_0 file's head (on the demo model, 4 bits there
 * cost 2 points of greedy agreement with fp32: 0.914 against 0.933 over 4,096 positions,
 * Q4_0 0.934); 4 where only exits read it. An exit is an approximation whose own error
 * dwarfs the head's rounding (at layer 3 of 6 the fp32 exit agrees 0.814 with the final
 * head, the int4 one 0.803 with an 8-bit head and 0.791 with a 4-bit one), while an edge
 * evaluates the head once per exit per token — at Llama-3.2-1B's shape each evaluation
 * reads 295 MB in 8 bits against 164 MB in 4, and an 8-bit head tied to the table keeps
 * the table in memory.
 */
export function defaultInt4HeadBits(spec: Pick<SegmentSpec, "finalHead">): Int4HeadBits {
  return spec.finalHead ? 8 : 4;
}

/** The bits of the segment's LM head (and of every exit's, which share it). */
export function headBits(spec: Pick<SegmentSpec, "weightFormat" | "int4HeadBits" | "finalHead">): 4 | 8 {
  return spec.weightFormat === "int4" ? (spec.int4HeadBits ?? defaultInt4HeadBits(spec)) : 8;
}
/** The block sizes ONNX Runtime's MatMulNBits takes (its kernel refuses others at load). */
export const QUANT_BLOCK_SIZES = [16, 32, 64, 128, 256] as const;

/** A segment spec with everything optional filled in with defaults. */
export function segmentSpec(
  partial: Partial<SegmentSpec> & Pick<SegmentSpec, "fromLayer" | "toLayer">,
): SegmentSpec {
  return {
    exits: [],
    finalHead: false,
    outputHidden: false,
    hiddenTaps: [],
    positions: "last",
    logits: false,
    weightFormat: DEFAULT_WEIGHT_FORMAT,
    moeExecution: "sparse",
    ...partial,
  };
}

/** Checks a spec against a model; throws InvalidArgumentError naming the field. */
export function validateSegmentSpec(spec: SegmentSpec, config: ModelConfig): void {
  const layers = config.numLayers;
  if (!HEAD_POSITIONS.includes(spec.positions))
    throw new InvalidArgumentError(
      "positions",
      `must be one of ${HEAD_POSITIONS.join(", ")}, got ${String(spec.positions)}`,
    );
  if (!MOE_EXECUTIONS.includes(spec.moeExecution))
    throw new InvalidArgumentError(
      "moeExecution",
      `must be one of ${MOE_EXECUTIONS.join(", ")}, got ${String(spec.moeExecution)}`,
    );
  // A host-routed MoE model runs as pieces; the piece after its last MoE layer has no layers.
  const headPiece = spec.moeExecution === "host" && spec.fromLayer === spec.toLayer;
  const maxFrom = headPiece ? layers : layers - 1;
  const minFrom = headPiece ? 1 : 0;
  if (!Number.isInteger(spec.fromLayer) || spec.fromLayer < minFrom || spec.fromLayer > maxFrom) {
    throw new InvalidArgumentError(
      "fromLayer",
      `must be an integer in [${minFrom}, ${maxFrom}], got ${spec.fromLayer}`,
    );
  }
  if (
    !headPiece &&
    (!Number.isInteger(spec.toLayer) || spec.toLayer <= spec.fromLayer || spec.toLayer > layers)
  ) {
    throw new InvalidArgumentError(
      "toLayer",
      `must be an integer in (${spec.fromLayer}, ${layers}], got ${spec.toLayer}`,
    );
  }
  // Exits read the hidden state after a layer of the segment, or a head piece's input.
  const firstExit = headPiece ? spec.fromLayer : spec.fromLayer + 1;
  const seen = new Set<number>();
  for (const exit of spec.exits) {
    if (!Number.isInteger(exit.afterLayer) || exit.afterLayer < firstExit || exit.afterLayer > spec.toLayer) {
      throw new InvalidArgumentError(
        "exits.afterLayer",
        `must be an integer in [${firstExit}, ${spec.toLayer}], got ${exit.afterLayer}`,
      );
    }
    if (seen.has(exit.afterLayer)) {
      throw new InvalidArgumentError("exits.afterLayer", `layer ${exit.afterLayer} appears twice`);
    }
    seen.add(exit.afterLayer);
    if (exit.linearMap) {
      const h = config.hiddenSize;
      if (exit.linearMap.weight.length !== h * h || exit.linearMap.bias.length !== h) {
        throw new InvalidArgumentError(
          "exits.linearMap",
          `exit after layer ${exit.afterLayer} needs a ${h}x${h} weight and ${h} bias`,
        );
      }
    }
  }
  for (const tap of spec.hiddenTaps) {
    if (!Number.isInteger(tap) || tap <= spec.fromLayer || tap > spec.toLayer) {
      throw new InvalidArgumentError(
        "hiddenTaps",
        `must be integers in (${spec.fromLayer}, ${spec.toLayer}], got ${tap}`,
      );
    }
  }
  if (spec.finalHead && spec.toLayer !== layers) {
    throw new InvalidArgumentError("finalHead", `needs toLayer = ${layers}, got ${spec.toLayer}`);
  }
  if (spec.moeExecution === "host" && !config.numExperts)
    throw new InvalidArgumentError("moeExecution", "host routing needs an MoE model, this one is dense");
  const blockSize = spec.quantBlockSize ?? DEFAULT_QUANT_BLOCK_SIZE;
  if (!(QUANT_BLOCK_SIZES as readonly number[]).includes(blockSize)) {
    throw new InvalidArgumentError(
      "quantBlockSize",
      `must be one of ${QUANT_BLOCK_SIZES.join(", ")}, got ${blockSize}`,
    );
  }
  if (spec.int4HeadBits !== undefined && !(INT4_HEAD_BITS as readonly number[]).includes(spec.int4HeadBits))
    throw new InvalidArgumentError(
      "int4HeadBits",
      `must be one of ${INT4_HEAD_BITS.join(", ")}, got ${spec.int4HeadBits}`,
    );
}

/**
 * A host-routed segment runs as pieces, each one graph: one layer ending at its router, or
 * no layers (exits and the head on the combined hidden state). Since the hidden state after
 * a piece's layer is made outside its graph, nothing in the graph may read it.
 */
export function validateHostMoePiece(spec: SegmentSpec, config: ModelConfig): void {
  validateSegmentSpec(spec, config);
  // Every layer of the MoE families Tandem loads is MoE: a piece is one layer or none.
  if (spec.toLayer - spec.fromLayer > 1)
    throw new InvalidArgumentError(
      "toLayer",
      `a host-routed MoE piece holds one layer (its MoE block runs outside), got [${spec.fromLayer}, ${spec.toLayer})`,
    );
  if (spec.fromLayer === spec.toLayer) return;
  const after = spec.toLayer;
  if (spec.finalHead || spec.exits.some((e) => e.afterLayer === after))
    throw new InvalidArgumentError(
      "exits.afterLayer",
      `the hidden state after MoE layer ${after - 1} is made outside a host-routed piece: its exits belong to the next piece`,
    );
  if (spec.outputHidden)
    throw new InvalidArgumentError(
      "outputHidden",
      "a host-routed MoE piece hands out its router's inputs, not a hidden state",
    );
  if (spec.hiddenTaps.length > 0)
    throw new InvalidArgumentError("hiddenTaps", "a host-routed MoE piece has no hidden state to tap");
}

/** Bumped whenever the graph layout changes, so cached graphs from older builders are not reused. */
export const SEGMENT_GRAPH_VERSION = 20;

/**
 * The exits of a segment graph whose adapter attends (exit-adapters.ts), ascending. Each
 * keeps keys and values of its own, which the engine holds after the segment's layers' in
 * a session's KV slot (entry layerCount + i for the i-th). An exit that runs a calibrated
 * linear map instead of its adapter keeps none.
 */
export function attendingExits(
  spec: SegmentSpec,
  config: ModelConfig,
  attendingAdapters: ReadonlySet<number>,
): number[] {
  return segmentExits(spec, config)
    .filter((exit) => !exit.linearMap && attendingAdapters.has(exit.afterLayer))
    .map((exit) => exit.afterLayer);
}

/** The exit layers whose adapter attends, from a checkpoint's adapters (none without). */
export function attendingAdapterLayers(
  adapters: ReadonlyMap<number, { attention?: unknown }> | undefined,
): Set<number> {
  return new Set([...(adapters ?? [])].filter(([, adapter]) => adapter.attention).map(([layer]) => layer));
}

/** The exits a segment reports, in order; the final head is the exit after the last layer. */
export function segmentExits(spec: SegmentSpec, config: ModelConfig): ExitHeadSpec[] {
  const exits = [...spec.exits].sort((a, b) => a.afterLayer - b.afterLayer);
  if (spec.finalHead && !exits.some((e) => e.afterLayer === config.numLayers)) {
    exits.push({ afterLayer: config.numLayers });
  }
  return exits;
}
