/**
 * One segment graph loaded into an ONNX Runtime session: turns typed inputs (token ids
 * or hidden states, per-row past KV) into one `run` and the outputs back into typed
 * results; token ids are embedded here, from the table in the graph's weights file. It
 * keeps no per-session state; see SegmentSessions for that.
 */
import { InternalError, type ProgressListener } from "@tandem/common";
import * as ort from "onnxruntime-node";
import type { ModelConfig } from "../checkpoint/model-config.ts";
import type { Checkpoint } from "../checkpoint/model-weights.ts";
import { dirname, join } from "node:path";
import { EMBEDDING_LAYOUT_FILE, readEmbeddingLayout } from "../graph/embedding-table-layout.ts";
import { ensureSegmentGraph, SEGMENT_WEIGHTS_FILE } from "../graph/graph-cache.ts";
import { GRAPH_IO } from "../graph/graph-io-names.ts";
import {
  attendingAdapterLayers,
  attendingExits,
  segmentExits,
  type SegmentSpec,
  validateHostMoePiece,
  validateSegmentSpec,
} from "../graph/segment-spec.ts";
import { EmbeddingTable } from "./embedding-table.ts";
import { appendKv, type KvSlot } from "./kv-slot.ts";

export const DEFAULT_SEGMENT_MODEL_OPTIONS = { threads: 1 } as const;

export interface SegmentModelOptions {
  /** Threads ONNX Runtime uses inside one operator. @default 1 */
  threads?: number;
  /** Where built graphs are cached. @default defaultGraphCacheDir() */
  cacheDir?: string;
  /** Told of a graph build's progress, layer by layer (minutes at 1B+); silent when cached. @default none */
  onProgress?: ProgressListener;
  /**
   * Whether ONNX Runtime's threads spin between operators rather than sleep: faster for
   * one session, ruinous for many sessions on few cores (each has its own pool). @default true
   */
  spinning?: boolean;
}

/** Keys and values of one layer of a KV slot: [rows, kvHeads, capacity, headDim] each. */
export interface LayerKv {
  key: Float32Array;
  value: Float32Array;
}

export interface SegmentRunInput {
  batch: number;
  /** New positions per row (all rows the same). */
  seq: number;
  /** Token ids [batch, seq] when the segment starts at layer 0. */
  ids?: BigInt64Array;
  /** Hidden states [batch, seq, hidden] when it starts later. */
  hidden?: Float32Array;
  /** Positions each row's cache holds before this run. */
  pastLengths: number[];
  /**
   * The rows' KV cache, one row per batch row, with room for max(pastLengths) + seq
   * positions. A run writes each row's new positions right after its pastLengths and
   * nothing before them; a failed one may have written some of them, which lie past
   * the row's length and so hold nothing it reads.
   */
  kv: KvSlot;
  /**
   * With the spec's positions "tail": how many of each row's last positions the exits and
   * the head evaluate, in [1, seq]. @default 1
   */
  headPositions?: number;
  /**
   * Rows whose results count, per batch row; the others run a dummy input whose results
   * are thrown away (rows of a KV pool between two that step). @default every row
   */
  active?: boolean[];
}

export interface ExitOutput {
  /** Layers run before this exit; the final head has afterLayer = numLayers. */
  afterLayer: number;
  /** Per row × evaluated position (row-major [batch, positions]). */
  token: Int32Array;
  prob: Float32Array;
  margin: Float32Array;
  entropy: Float32Array;
  /** KL divergence from the nearest earlier exit of the same graph (absent at its first exit). */
  klPrevious?: Float32Array;
  /** [batch, positions, vocab] when the spec asks for logits. */
  logits?: Float32Array;
}

/** What a host-routed MoE piece hands out for its last layer's experts (row-major [batch, seq, …]). */
export interface MoeRouting {
  layer: number;
  /** The experts' input, [batch·seq, hidden]. */
  input: Float32Array;
  /** The residual stream the weighted experts' sum is added to, [batch·seq, hidden]. */
  residual: Float32Array;
  /** The k chosen experts per position, [batch·seq, k]. */
  choices: BigInt64Array;
  /** Their router weights, [batch·seq, k]. */
  weights: Float32Array;
}

export interface SegmentRunOutput {
  hidden?: Float32Array;
  taps: Map<number, Float32Array>;
  exits: ExitOutput[];
  /** Present when the spec's moeExecution is `host` and the segment ends in an MoE layer. */
  moe?: MoeRouting;
}

/**
 * What SegmentSessions drives: a segment's layers as one run per step. A SegmentModel is
 * one graph; a HostRoutedMoeModel chains one graph per layer with its experts run outside.
 */
export interface SegmentRunner {
  readonly config: ModelConfig;
  readonly spec: SegmentSpec;
  readonly weightsHash: string;
  /** afterLayer of every exit the segment reports, ascending (the final head last). */
  readonly exitLayers: number[];
  readonly layerCount: number;
  /**
   * Entries of a session's KV slot: one per layer, then one per exit whose adapter attends
   * (segment-spec.ts attendingExits), which keeps keys and values of its own.
   */
  readonly kvEntryCount: number;
  run(input: SegmentRunInput): Promise<SegmentRunOutput>;
  /** Expert activations per (layer − fromLayer)·numExperts + expert since the last call; undefined when dense. */
  takeExpertCounts(): number[] | undefined;
  release(): Promise<void>;
}

export class SegmentModel implements SegmentRunner {
  readonly config: ModelConfig;
  readonly spec: SegmentSpec;
  readonly weightsHash: string;
  /** afterLayer of every exit the segment reports, ascending (the final head last). */
  readonly exitLayers: number[];
  /** The exits whose adapter attends, ascending: their caches follow the layers' in a slot. */
  readonly attendingExitLayers: number[];
  readonly graphPath: string;
  /** MoE only: activations per (layer, expert) of this segment, since the last take. */
  private expertCounts?: Float64Array;

  private constructor(
    private readonly session: ort.InferenceSession,
    checkpoint: Checkpoint,
    spec: SegmentSpec,
    graphPath: string,
    /** Where token ids become hidden states, when the segment starts at layer 0. */
    private readonly embedding: EmbeddingTable | undefined,
  ) {
    this.config = checkpoint.config;
    this.spec = spec;
    this.weightsHash = checkpoint.weightsHash;
    this.exitLayers = segmentExits(spec, checkpoint.config).map((e) => e.afterLayer);
    this.attendingExitLayers = attendingExits(
      spec,
      checkpoint.config,
      attendingAdapterLayers(checkpoint.weights.exitAdapters),
    );
    this.graphPath = graphPath;
    if (checkpoint.config.numExperts)
      this.expertCounts = new Float64Array((spec.toLayer - spec.fromLayer) * checkpoint.config.numExperts);
  }

  /**
   * How often each expert of this segment's layers was chosen (once per token and layer)
   * since the last call, indexed (layer − fromLayer)·numExperts + expert; undefined for
   * a dense model. What a cloud worker publishes as its expert load.
   */
  takeExpertCounts(): number[] | undefined {
    if (!this.expertCounts) return undefined;
    const counts = Array.from(this.expertCounts);
    this.expertCounts.fill(0);
    return counts;
  }

  static async load(
    checkpoint: Checkpoint,
    spec: SegmentSpec,
    options: SegmentModelOptions = {},
  ): Promise<SegmentModel> {
    if (spec.moeExecution === "host") validateHostMoePiece(spec, checkpoint.config);
    else validateSegmentSpec(spec, checkpoint.config);
    const graphPath = await ensureSegmentGraph(checkpoint, spec, options.cacheDir, options.onProgress);
    const graphDir = dirname(graphPath);
    const embedding =
      spec.fromLayer === 0
        ? EmbeddingTable.open(
            join(graphDir, SEGMENT_WEIGHTS_FILE),
            readEmbeddingLayout(join(graphDir, EMBEDDING_LAYOUT_FILE)),
          )
        : undefined;
    try {
      const session = await ort.InferenceSession.create(graphPath, {
        intraOpNumThreads: options.threads ?? DEFAULT_SEGMENT_MODEL_OPTIONS.threads,
        interOpNumThreads: 1,
        executionMode: "sequential",
        graphOptimizationLevel: "all",
        ...(options.spinning === false && { extra: { session: { intra_op: { allow_spinning: "0" } } } }),
      });
      return new SegmentModel(session, checkpoint, spec, graphPath, embedding);
    } catch (error) {
      embedding?.close();
      throw error;
    }
  }

  get layerCount(): number {
    return this.spec.toLayer - this.spec.fromLayer;
  }

  get kvEntryCount(): number {
    return this.layerCount + this.attendingExitLayers.length;
  }

  /** The graph's cache names of slot entry i: a layer's, then an attending exit's. */
  private kvNames(i: number): { pastKey: string; pastValue: string; newKey: string; newValue: string } {
    if (i < this.layerCount) {
      const layer = this.spec.fromLayer + i;
      return {
        pastKey: GRAPH_IO.pastKey(layer),
        pastValue: GRAPH_IO.pastValue(layer),
        newKey: GRAPH_IO.newKey(layer),
        newValue: GRAPH_IO.newValue(layer),
      };
    }
    const exit = this.attendingExitLayers[i - this.layerCount];
    return {
      pastKey: GRAPH_IO.exitPastKey(exit),
      pastValue: GRAPH_IO.exitPastValue(exit),
      newKey: GRAPH_IO.exitNewKey(exit),
      newValue: GRAPH_IO.exitNewValue(exit),
    };
  }

  async run(input: SegmentRunInput): Promise<SegmentRunOutput> {
    const { config, spec } = this;
    const { batch, seq, kv } = input;
    this.checkKvSlot(kv, batch, seq, input.pastLengths);
    const pastLength = Math.max(0, ...input.pastLengths);
    const kvShape = [batch, config.numKvHeads, kv.capacity, config.headDim];
    const feeds: Record<string, ort.Tensor> = {
      [GRAPH_IO.pastLengths]: new ort.Tensor("int64", BigInt64Array.from(input.pastLengths, BigInt), [batch]),
    };
    if (spec.positions === "tail" && this.exitLayers.length > 0) {
      const n = input.headPositions ?? 1;
      if (!Number.isInteger(n) || n < 1 || n > seq)
        throw new InternalError(`head positions ${n} for a run of ${seq} positions`);
      feeds[GRAPH_IO.headPositions] = new ort.Tensor("int64", BigInt64Array.from([BigInt(n)]), [1]);
    }
    let hidden = input.hidden;
    if (this.embedding) {
      if (!input.ids) throw new InternalError("segment starting at layer 0 needs ids");
      if (input.ids.length !== batch * seq)
        throw new InternalError(`${input.ids.length} token ids for a batch of ${batch} × ${seq}`);
      hidden = this.embedding.lookup(input.ids);
    }
    if (!hidden) throw new InternalError("segment starting after layer 0 needs hidden states");
    feeds[GRAPH_IO.hiddenIn] = new ort.Tensor("float32", hidden, [batch, seq, config.hiddenSize]);
    for (let i = 0; i < this.kvEntryCount; i++) {
      const names = this.kvNames(i);
      if (pastLength === 0) {
        // Nothing to attend to in the past: one masked position instead of the slot's capacity.
        const empty = new Float32Array(batch * config.numKvHeads * config.headDim);
        const shape = [batch, config.numKvHeads, 1, config.headDim];
        feeds[names.pastKey] = new ort.Tensor("float32", empty, shape);
        feeds[names.pastValue] = new ort.Tensor("float32", empty, shape);
        continue;
      }
      feeds[names.pastKey] = new ort.Tensor("float32", kv.layers[i].key, kvShape);
      feeds[names.pastValue] = new ort.Tensor("float32", kv.layers[i].value, kvShape);
    }

    const results = await this.session.run(feeds);
    for (let i = 0; i < this.kvEntryCount; i++) {
      const names = this.kvNames(i);
      appendKv(
        kv,
        i,
        results[names.newKey].data as Float32Array,
        results[names.newValue].data as Float32Array,
        input.pastLengths,
        seq,
        config.numKvHeads,
        config.headDim,
      );
    }

    if (this.expertCounts) {
      const experts = config.numExperts!;
      for (let layer = spec.fromLayer; layer < spec.toLayer; layer++) {
        const choices = results[GRAPH_IO.expertChoices(layer)].data as BigInt64Array;
        const perRow = choices.length / batch;
        choices.forEach((expert, i) => {
          if (input.active?.[Math.floor(i / perRow)] === false) return;
          this.expertCounts![(layer - spec.fromLayer) * experts + Number(expert)]++;
        });
      }
    }
    const taps = new Map<number, Float32Array>();
    for (const tap of spec.hiddenTaps) taps.set(tap, results[GRAPH_IO.hiddenAfter(tap)].data as Float32Array);
    const exits = this.exitLayers.map((k): ExitOutput => {
      const tokens = results[GRAPH_IO.exitOutput(k, "token")].data as BigInt64Array;
      return {
        afterLayer: k,
        token: Int32Array.from(tokens, (t) => Number(t)),
        prob: results[GRAPH_IO.exitOutput(k, "prob")].data as Float32Array,
        margin: results[GRAPH_IO.exitOutput(k, "margin")].data as Float32Array,
        entropy: results[GRAPH_IO.exitOutput(k, "entropy")].data as Float32Array,
        klPrevious: results[GRAPH_IO.exitOutput(k, "kl_previous")]?.data as Float32Array | undefined,
        logits: spec.logits ? (results[GRAPH_IO.exitOutput(k, "logits")].data as Float32Array) : undefined,
      };
    });
    const moeLayer = spec.toLayer - 1;
    const hostRouted = spec.moeExecution === "host" && spec.toLayer > spec.fromLayer;
    return {
      hidden: spec.outputHidden ? (results[GRAPH_IO.hiddenOut].data as Float32Array) : undefined,
      taps,
      exits,
      moe: hostRouted
        ? {
            layer: moeLayer,
            input: results[GRAPH_IO.moeInput(moeLayer)].data as Float32Array,
            residual: results[GRAPH_IO.moeResidual(moeLayer)].data as Float32Array,
            choices: results[GRAPH_IO.expertChoices(moeLayer)].data as BigInt64Array,
            weights: results[GRAPH_IO.expertWeights(moeLayer)].data as Float32Array,
          }
        : undefined,
    };
  }

  /**
   * The slot must be this segment's, one row per batch row, with room for every row's
   * past and `seq` new positions. Each entry is checked, before the run, because appendKv
   * trusts them: a missing or NaN one would be written at position 0 (a typed array takes
   * a NaN offset as 0, and a capacity check on a NaN maximum passes), a negative one into
   * the previous head's positions.
   */
  private checkKvSlot(kv: KvSlot, batch: number, seq: number, pastLengths: number[]): void {
    const { numKvHeads, headDim, maxPositions } = this.config;
    const size = batch * numKvHeads * kv.capacity * headDim;
    if (kv.rows !== batch || kv.layers.length !== this.kvEntryCount)
      throw new InternalError(
        `KV slot of ${kv.rows} rows × ${kv.layers.length} entries for a batch of ${batch} × ${this.kvEntryCount}`,
      );
    if (!Number.isInteger(seq) || seq < 1)
      throw new InternalError(`seq must be a positive integer, got ${seq}`);
    if (pastLengths.length !== batch)
      throw new InternalError(`pastLengths has ${pastLengths.length} entries for a batch of ${batch}`);
    pastLengths.forEach((past, row) => {
      if (!Number.isInteger(past) || past < 0 || past + seq > kv.capacity)
        throw new InternalError(
          `pastLengths[${row}] must be an integer in [0, ${kv.capacity - seq}] (KV slot capacity ${kv.capacity} − seq ${seq}), got ${past}`,
        );
    });
    if (kv.capacity > maxPositions)
      throw new InternalError(`KV slot capacity ${kv.capacity} must not exceed ${maxPositions}`);
    if (kv.layers.some((layer) => layer.key.length !== size || layer.value.length !== size))
      throw new InternalError(`KV slot tensors must hold ${size} values each`);
  }

  async release(): Promise<void> {
    this.embedding?.close();
    await this.session.release();
  }
}
