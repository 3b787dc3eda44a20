/**
 * Builds the ONNX graph of a model segment (decoder layers [from, to)) from checkpoint
 * weights, in the manner of onnxruntime-genai's model builder: embedding, then per layer
 * norm → attention → norm → MLP, then exit heads and/or the final head. Its inputs and
 * outputs, names and shapes, are the contract in graph-io-names.ts.
 */
import { InternalError, type ProgressListener } from "@tandem/common";
import type { ModelConfig } from "../checkpoint/model-config.ts";
import { rotaryInverseFrequencies } from "../checkpoint/rope-frequencies.ts";
import type { LayerWeights, ModelWeights, WeightTensor } from "../checkpoint/model-weights.ts";
import { exitAdapterTensors } from "../checkpoint/exit-adapters.ts";
import { GRAPH_IO } from "./graph-io-names.ts";
import type { EmbeddingTableLayout } from "./embedding-table-layout.ts";
import {
  OnnxGraphBuilder,
  type BuiltGraph,
  type ExternalDataSink,
  type ExternalRegion,
} from "./onnx-graph-builder.ts";
import { quantizeNBits } from "./nbits-quantizer.ts";
import {
  channelInt8Weight,
  INT8_MAX_LEVEL,
  quantizeChannelRows,
  W8A8_ROTATION_BLOCK,
} from "./channel-int8-quantizer.ts";
import {
  HadamardRotation,
  hadamardMatrix,
  rotationBlock,
  rotationSigns,
} from "../codec/hadamard-rotation.ts";
import {
  DEFAULT_QUANT_BLOCK_SIZE,
  headBits,
  segmentExits,
  segmentSpec,
  type ExitHeadSpec,
  type SegmentSpec,
  validateHostMoePiece,
  validateSegmentSpec,
} from "./segment-spec.ts";

/** A built segment graph, and where its embedding table is when it starts at layer 0. */
export interface SegmentGraph extends BuiltGraph {
  /**
   * The token embedding table in the external data file, which the engine reads rows from
   * (embedding-table-layout.ts); the graph itself starts from hidden states. Present when
   * the segment starts at layer 0.
   */
  embedding?: EmbeddingTableLayout;
}

/**
 * Writes the segment's graph; its weights go to `externalData` as they are converted,
 * tensor by tensor, and each checkpoint tensor's decoded values are released once written
 * (WeightTensor.release), so a build never holds the segment's weights all at once.
 */
export function buildSegmentGraph(
  config: ModelConfig,
  weights: ModelWeights,
  spec: SegmentSpec,
  externalData: ExternalDataSink,
  onProgress?: ProgressListener,
): SegmentGraph {
  if (spec.moeExecution === "host") validateHostMoePiece(spec, config);
  else validateSegmentSpec(spec, config);
  return new SegmentGraphWriter(config, weights, spec, externalData, onProgress).write();
}

/**
 * Writes one expert of an MoE layer as a graph of its own (host-routed MoE), in the
 * given weight format; only that expert's tensors are read.
 */
export function buildExpertGraph(
  config: ModelConfig,
  weights: ModelWeights,
  layer: number,
  expert: number,
  format: SegmentSpec["weightFormat"],
  quantBlockSize: number | undefined,
  externalData: ExternalDataSink,
): BuiltGraph {
  const spec = segmentSpec({ fromLayer: layer, toLayer: layer + 1, weightFormat: format, quantBlockSize });
  validateSegmentSpec(spec, config);
  if (!config.numExperts || !Number.isInteger(expert) || expert < 0 || expert >= config.numExperts)
    throw new InternalError(`expert ${expert} is not one of the model's ${config.numExperts ?? 0}`);
  return new SegmentGraphWriter(config, weights, spec, externalData).writeExpert(layer, expert);
}

/** The phase a segment's build reports: `building [0,8) int4`, counted in layers. */
export function buildPhase(spec: SegmentSpec): string {
  return `building [${spec.fromLayer},${spec.toLayer}) ${spec.weightFormat}`;
}

/** A quantized weight's initializers, in MatMulNBits's shapes: its packed blocks and their scales. */
interface QuantizedWeight {
  /** [rows, blocks, blob] uint8. */
  packed(): string;
  /** [rows·blocks] fp32. */
  scales(): string;
}

class SegmentGraphWriter {
  private readonly b: OnnxGraphBuilder;
  private readonly exits: ExitHeadSpec[];
  private readonly blockSize: number;
  private lmHeadName?: string;
  /** The fp32 table as an initializer, for a tied fp32 head; made on first use. */
  private tableInitializer?: () => string;
  private embeddingLayout?: EmbeddingTableLayout;
  /** Initializers already written per weight, so heads shared by several exits are stored once. */
  private readonly linearInitializers = new Map<string, string[]>();
  private readonly quantizedWeights = new Map<string, QuantizedWeight>();
  private readonly normInitializers = new Map<string, string>();
  /** The last exit head written: its logits and log-sum-exp, which the next exit compares with. */
  private previousExitHead?: { logits: string; logSumExp: string };

  constructor(
    private readonly config: ModelConfig,
    private readonly weights: ModelWeights,
    private readonly spec: SegmentSpec,
    externalData: ExternalDataSink,
    private readonly onProgress: ProgressListener = () => undefined,
  ) {
    this.b = new OnnxGraphBuilder(`tandem_segment_${spec.fromLayer}_${spec.toLayer}`, externalData);
    this.exits = segmentExits(spec, config);
    this.blockSize = spec.quantBlockSize ?? DEFAULT_QUANT_BLOCK_SIZE;
  }

  write(): SegmentGraph {
    const { b, config, spec } = this;
    const hidden = config.hiddenSize;
    b.input(GRAPH_IO.pastLengths, "int64", ["batch"]);
    if (spec.positions === "tail" && this.exits.length > 0) b.input(GRAPH_IO.headPositions, "int64", [1]);

    // A segment from layer 0 starts from the embedded tokens too: the engine looks them up
    // in the table written here (embedding-table-layout.ts says why not the graph).
    let x = b.input(GRAPH_IO.hiddenIn, "float32", ["batch", "seq", hidden]);
    if (spec.fromLayer === 0) {
      this.embeddingLayout =
        spec.weightFormat === "fp32" ? this.embeddingTable() : this.quantizedEmbeddingTable();
      // A tied head in another format decodes the table again: one tensor, not the model.
      this.weights.embedTokens.release?.();
    }

    if (spec.fromLayer === spec.toLayer) return this.writeHeadPiece(x);
    const rotary = this.rotaryCaches();
    const positions = this.newPositions(x);
    for (let layer = spec.fromLayer; layer < spec.toLayer; layer++) {
      const out = this.decoderLayer(layer, x, rotary, positions);
      releaseLayer(this.weights.layers[layer]);
      this.onProgress({
        phase: buildPhase(spec),
        done: layer + 1 - spec.fromLayer,
        total: spec.toLayer - spec.fromLayer,
      });
      // A host-routed MoE layer ends the piece: validation allows nothing after it.
      if (out === undefined) break;
      x = out;
      const after = layer + 1;
      if (spec.hiddenTaps.includes(after))
        this.outputAlias(x, GRAPH_IO.hiddenAfter(after), ["batch", "seq", hidden]);
      const exit = this.exits.find((e) => e.afterLayer === after);
      if (exit) this.exitHead(exit, x, { rotary, positions });
    }
    if (spec.outputHidden) this.outputAlias(x, GRAPH_IO.hiddenOut, ["batch", "seq", hidden]);
    for (const adapter of this.weights.exitAdapters?.values() ?? [])
      for (const tensor of exitAdapterTensors(adapter)) tensor.release?.();
    this.weights.lmHead.release?.();
    this.weights.finalNorm.release?.();
    return { ...b.build(), embedding: this.embeddingLayout };
  }

  /**
   * A piece of no layers (host-routed MoE, after the last MoE layer): its exits and the
   * final head read its input, the hidden state the engine combined.
   */
  private writeHeadPiece(x: string): SegmentGraph {
    const { b, spec } = this;
    const exit = this.exits.find((e) => e.afterLayer === spec.fromLayer);
    if (exit) this.exitHead(exit, x);
    if (spec.outputHidden) this.outputAlias(x, GRAPH_IO.hiddenOut, ["batch", "seq", this.config.hiddenSize]);
    this.weights.lmHead.release?.();
    this.weights.finalNorm.release?.();
    return b.build();
  }

  /**
   * The fp32 table, [vocab, hidden] as stored. No node reads it unless a tied fp32 head
   * does (Gemm with transB reads it as stored), through an initializer over the same bytes.
   */
  private embeddingTable(): EmbeddingTableLayout {
    const { b } = this;
    const table = asLinear(this.weights.embedTokens);
    const { name, rows, cols } = table;
    const values = writeFloatRows(b, table);
    let initializer: string | undefined;
    this.tableInitializer = () =>
      (initializer ??= b.externalInitializer(name, "float32", [rows, cols], values));
    return { rows, cols, encoding: "float32", values };
  }

  /** A [rows, cols] fp32 table as stored, as an initializer. */
  private streamedTable(name: string, table: LinearWeight): string {
    return this.b.externalInitializer(
      name,
      "float32",
      [table.rows, table.cols],
      writeFloatRows(this.b, table),
    );
  }

  /**
   * With quantized weights the table is kept in 8 bits, block-wise in MatMulNBits's layout
   * (a quarter of fp32's bytes). An int8 segment's tied LM head multiplies by the very
   * same bytes, through initializers made when the head asks for them.
   */
  private quantizedEmbeddingTable(): EmbeddingTableLayout {
    const table = asLinear(this.weights.embedTokens);
    const quantized = this.quantizedRegions(table, 8);
    this.quantizedWeights.set(quantizedKey(table, 8), quantized.weight);
    return {
      rows: table.rows,
      cols: table.cols,
      encoding: "int8-blocks",
      values: quantized.packed,
      scales: quantized.scales,
      blockSize: this.blockSize,
    };
  }

  /**
   * A weight quantized for MatMulNBits: its packed blocks [rows, blocks, blob] and their
   * fp32 scales [rows·blocks], written once per weight and bit width. Quantized a block of
   * rows at a time (each row's blocks are its own), so a 1 GB table is never whole.
   */
  private quantizedWeight(weight: LinearWeight, bits: 4 | 8): QuantizedWeight {
    const key = quantizedKey(weight, bits);
    let quantized = this.quantizedWeights.get(key);
    if (!quantized) {
      quantized = this.quantizedRegions(weight, bits).weight;
      this.quantizedWeights.set(key, quantized);
    }
    return quantized;
  }

  /**
   * Quantizes `weight` into the external data (packed blocks, then scales) and hands back
   * where they went, and initializers over them made on first use: no node need read them.
   */
  private quantizedRegions(
    weight: LinearWeight,
    bits: 4 | 8,
  ): { packed: ExternalRegion; scales: ExternalRegion; weight: QuantizedWeight } {
    const { b, blockSize } = this;
    const { name, rows, cols } = weight;
    const blocksPerRow = Math.ceil(cols / blockSize);
    const blob = (blockSize * bits) / 8;
    // The initializers are made later, if at all: what their closures hold is small.
    const { packed, scales } = writeQuantized(b, weight, bits, blockSize);
    let packedName: string | undefined;
    let scalesName: string | undefined;
    return {
      packed,
      scales,
      weight: {
        packed: () =>
          (packedName ??= b.externalInitializer(
            `${name}.q${bits}`,
            "uint8",
            [rows, blocksPerRow, blob],
            packed,
          )),
        scales: () =>
          (scalesName ??= b.externalInitializer(
            `${name}.q${bits}.scales`,
            "float32",
            [rows * blocksPerRow],
            scales,
          )),
      },
    };
  }

  /**
   * The positions of each row's new tokens, [batch, seq] int64: row b's start at
   * past_lengths[b]. Built once from the inputs, shared by every layer.
   */
  private newPositions(x: string): NewPositions {
    const { b } = this;
    const prefix = "/model/new_positions";
    const seqLength = b.op("Shape", `${prefix}/seq`, [x], { start: 1, end: 2 });
    const steps = b.op("Range", `${prefix}/steps`, [
      b.int64Constant([0], true),
      b.op("Squeeze", `${prefix}/seq/Squeeze`, [seqLength, b.int64Constant([0])]),
      b.int64Constant([1], true),
    ]);
    const positions = b.op("Add", `${prefix}/positions`, [
      b.op("Unsqueeze", `${prefix}/first/Unsqueeze`, [GRAPH_IO.pastLengths, b.int64Constant([1])]),
      b.op("Unsqueeze", `${prefix}/steps/Unsqueeze`, [steps, b.int64Constant([0])]),
    ]);
    return { positions };
  }

  /** cos/sin tables [maxPositions, headDim/2] for the rotary embedding (HF rotate_half layout). */
  private rotaryCaches(): RotaryCaches {
    const { headDim, maxPositions } = this.config;
    const half = headDim / 2;
    const cos = new Float32Array(maxPositions * half);
    const sin = new Float32Array(maxPositions * half);
    const inverseFrequencies = rotaryInverseFrequencies(this.config);
    for (let i = 0; i < half; i++) {
      const inverseFrequency = inverseFrequencies[i];
      for (let p = 0; p < maxPositions; p++) {
        // Math.fround: HF computes the angle in fp32 (inv_freq is a float32 tensor).
        const angle = Math.fround(p * inverseFrequency);
        cos[p * half + i] = Math.cos(angle);
        sin[p * half + i] = Math.sin(angle);
      }
    }
    return {
      cos: this.b.initializer("/model/rotary/cos_cache", "float32", [maxPositions, half], cos),
      sin: this.b.initializer("/model/rotary/sin_cache", "float32", [maxPositions, half], sin),
    };
  }

  /*
   *   x ──► RMSNorm ──► QKV MatMul (+bias) ──► attention ──► o_proj ──► (+) ──► h
   *   └──────────────────────────────────────────────────────────────────────────┘
   *   h ──► RMSNorm ──► gate_up MatMul ──► Split ──► silu(gate)·up ──► down ──► (+) ──► out
   *   └──────────────────────────────────────────────────────────────────────────┘
   */
  private decoderLayer(
    layer: number,
    x: string,
    rotary: RotaryCaches,
    positions: NewPositions,
  ): string | undefined {
    const { b } = this;
    const w = this.weights.layers[layer];
    const prefix = `/model/layers.${layer}`;
    const afterAttention = this.attentionHalf(
      prefix,
      x,
      w,
      {
        pastKey: GRAPH_IO.pastKey(layer),
        pastValue: GRAPH_IO.pastValue(layer),
        newKey: GRAPH_IO.newKey(layer),
        newValue: GRAPH_IO.newValue(layer),
        qkvBias: `model.layers.${layer}.qkv_bias`,
      },
      rotary,
      positions,
    );

    const normed2 = this.rmsNorm(`${prefix}/post_attention_layernorm`, afterAttention, w.postAttentionNorm);
    if (w.experts && this.spec.moeExecution === "host") {
      this.hostRoutedMoe(`${prefix}/block_sparse_moe`, afterAttention, normed2, w, layer);
      return undefined;
    }
    const mlp = !w.experts
      ? this.mlp(`${prefix}/mlp`, normed2, w)
      : this.spec.moeExecution === "sparse"
        ? this.sparseMoe(`${prefix}/block_sparse_moe`, normed2, w, layer)
        : this.allExpertsMoe(`${prefix}/block_sparse_moe`, normed2, w, layer);
    return b.op("Add", `${prefix}/mlp/residual/Add`, [afterAttention, mlp]);
  }

  /**
   * A decoder layer's attention half, x + o_proj(attention(RMSNorm(x))), with the cache
   * named by `names`: a layer's, or an attending exit adapter's (exitHead).
   */
  private attentionHalf(
    prefix: string,
    x: string,
    w: AttentionHalfWeights,
    names: AttentionNames,
    rotary: RotaryCaches,
    positions: NewPositions,
  ): string {
    const { b, config } = this;
    const normed = this.rmsNorm(`${prefix}/input_layernorm`, x, w.inputNorm);

    let qkv = this.linear(`${prefix}/attn/qkv_proj`, normed, concatRows([w.qProj, w.kProj, w.vProj]));
    if (w.qBias && w.kBias && w.vBias) {
      const bias = concatVectors([w.qBias, w.kBias, w.vBias]);
      qkv = b.op("Add", `${prefix}/attn/qkv_proj/BiasAdd`, [
        qkv,
        b.initializer(names.qkvBias, "float32", [bias.length], bias),
      ]);
    }
    const cacheShape = ["batch", config.numKvHeads, "past", config.headDim];
    const pastKey = b.input(names.pastKey, "float32", cacheShape);
    const pastValue = b.input(names.pastValue, "float32", cacheShape);
    const qDim = config.numHeads * config.headDim;
    const kvDim = config.numKvHeads * config.headDim;
    const [splitQuery, splitKey, value] = b.node(
      "Split",
      `${prefix}/attn/qkv_proj/Split`,
      [qkv, b.int64Constant([qDim, kvDim, kvDim])],
      { outputs: 3, attributes: { axis: -1 } },
    );
    let [query, key] = [splitQuery, splitKey];
    if (w.qNorm && w.kNorm) {
      query = this.headNorm(`${prefix}/attn/q_norm`, query, w.qNorm, config.numHeads);
      key = this.headNorm(`${prefix}/attn/k_norm`, key, w.kNorm, config.numKvHeads);
    }
    const attention = this.attention(
      prefix,
      names,
      [query, key, value],
      pastKey,
      pastValue,
      rotary,
      positions,
    );
    const projected = this.linear(`${prefix}/attn/o_proj`, attention, asLinear(w.oProj));
    return b.op("Add", `${prefix}/attn/residual/Add`, [x, projected]);
  }

  /*
   * Causal grouped-query attention that reads the cache where it lies:
   *   q, k ──► rotate_half rotary at each row's positions
   *   scores = [q·pastᵀ/√d (a row's own past only) | q·newᵀ/√d (keys not after the query)]
   *   softmax(scores) · [past values | new values]
   * and returns the new positions' keys and values for the engine to append (appendKv).
   * Query heads are grouped over their KV head ([batch, kvHeads, groups, seq, d]), so no
   * KV head is copied either.
   *
   * Why not ONNX Runtime's fused GroupQueryAttention, which updates the cache in place:
   * onnxruntime-node copies every output of a run into a fresh JavaScript buffer, a
   * present bound to the past's own buffer included. Its in-place cache therefore cost a
   * copy of every layer's whole cache per decode step, into memory the process had to
   * fault in — on the 110M model at 1,000 positions, decode steps of 16 ms instead of
   * 4.5. Nothing here is as large as the cache but the scores. Any even head size works.
   */
  private attention(
    prefix: string,
    names: Pick<AttentionNames, "newKey" | "newValue">,
    [query, key, value]: readonly [string, string, string],
    pastKey: string,
    pastValue: string,
    rotary: RotaryCaches,
    positions: NewPositions,
  ): string {
    const { b, config } = this;
    const { numHeads, numKvHeads, headDim } = config;
    const groups = numHeads / numKvHeads;
    const p = `${prefix}/attn`;
    // [batch, seq, heads·d] → the same, rotated (HF rotate_half layout), → [batch, seq, heads, d]
    const rotated = (name: string, x: string, heads: number): string =>
      b.op("Reshape", `${p}/${name}/heads`, [
        b.node(
          "RotaryEmbedding",
          `${p}/${name}/RotaryEmbedding`,
          [x, positions.positions, rotary.cos, rotary.sin],
          {
            domain: "com.microsoft",
            attributes: { num_heads: heads, interleaved: 0 },
          },
        )[0],
        b.int64Constant([0, 0, heads, headDim]),
      ]);
    const toCacheLayout = [0, 2, 1, 3]; // [batch, seq, kvHeads, d] → [batch, kvHeads, seq, d]
    const newKvShape = ["batch", numKvHeads, "seq", headDim];
    // Written straight to the graph's outputs: an Identity per output would be one more
    // operator run per layer and step (a few microseconds each, 24 a step at 12 layers).
    const [newKey] = b.node("Transpose", `${p}/new_key/Transpose`, [rotated("key", key, numKvHeads)], {
      attributes: { perm: toCacheLayout },
      outputs: [b.output(names.newKey, "float32", newKvShape)],
    });
    const [newValue] = b.node(
      "Transpose",
      `${p}/new_value/Transpose`,
      [b.op("Reshape", `${p}/value/heads`, [value, b.int64Constant([0, 0, numKvHeads, headDim])])],
      {
        attributes: { perm: toCacheLayout },
        outputs: [b.output(names.newValue, "float32", newKvShape)],
      },
    );

    // Scores against the past and against the new positions are computed apart and meet
    // only in the softmax: the past is read where it lies, never copied into a present.
    const groupedQuery = b.op(
      "Transpose",
      `${p}/query/grouped`,
      [
        b.op("Reshape", `${p}/query/groups`, [
          rotated("query", query, numHeads),
          b.int64Constant([0, 0, numKvHeads, groups, headDim]),
        ]),
      ],
      { perm: [0, 2, 3, 1, 4] },
    ); // [batch, kvHeads, groups, seq, d]
    const perKvHead = (name: string, x: string): string =>
      b.op("Unsqueeze", `${p}/${name}/Unsqueeze`, [x, b.int64Constant([2])]); // [batch, kvHeads, 1, n, d]
    // q·kᵀ/√d in one kernel: FusedMatMul reads the keys transposed, so none is copied.
    const scores = (name: string, keys: string): string =>
      b.op(
        "FusedMatMul",
        `${p}/${name}/FusedMatMul`,
        [groupedQuery, perKvHead(name, keys)],
        {
          transB: 1,
          alpha: { float: 1 / Math.sqrt(headDim) },
        },
        "com.microsoft",
      );
    const pastScores = b.op("Add", `${p}/past_scores/mask`, [
      scores("past_key", pastKey),
      this.pastMask(positions, pastKey),
    ]); // [batch, kvHeads, groups, seq, capacity]
    const newScores = b.op("Add", `${p}/new_scores/mask`, [
      scores("new_key", newKey),
      this.newMask(positions),
    ]); // [batch, kvHeads, groups, seq, seq]
    const probs = b.op(
      "Softmax",
      `${p}/Softmax`,
      [b.op("Concat", `${p}/scores/Concat`, [pastScores, newScores], { axis: -1 })],
      { axis: -1 },
    );
    const capacity = this.capacity(positions, pastKey);
    const axis = b.int64Constant([-1]);
    const pastProbs = b.op("Slice", `${p}/past_probs`, [probs, b.int64Constant([0]), capacity, axis]);
    const newProbs = b.op("Slice", `${p}/new_probs`, [probs, capacity, b.int64Constant([2 ** 62]), axis]);
    const context = b.op("Add", `${p}/context/Add`, [
      b.op("MatMul", `${p}/context/past`, [pastProbs, perKvHead("past_value", pastValue)]),
      b.op("MatMul", `${p}/context/new`, [newProbs, perKvHead("new_value", newValue)]),
    ]); // [batch, kvHeads, groups, seq, d]
    return b.op("Reshape", `${p}/context/merge_heads`, [
      b.op("Transpose", `${p}/context/Transpose`, [context], { perm: [0, 3, 1, 2, 4] }),
      b.int64Constant([0, 0, numHeads * headDim]),
    ]);
  }

  /**
   * What masks a past score, added to it, [batch, 1, 1, 1, capacity]: 0 where the row's
   * past position holds a key of its own (below its first new position), the lowest float
   * elsewhere — a slot's tail (room for later tokens, or positions rolled back), whatever
   * it holds. An addend rather than a Where: ONNX Runtime's broadcasting Add is several
   * times faster. Built once per graph.
   */
  private pastMask(positions: NewPositions, pastKey: string): string {
    const { b } = this;
    if (positions.pastMask) return positions.pastMask;
    const prefix = "/model/past_mask";
    const capacity = b.op("Squeeze", `${prefix}/capacity`, [
      this.capacity(positions, pastKey),
      b.int64Constant([0]),
    ]);
    const keyPositions = b.op("Range", `${prefix}/keys`, [
      b.int64Constant([0], true),
      capacity,
      b.int64Constant([1], true),
    ]);
    const visible = b.op("Less", `${prefix}/Less`, [
      keyPositions,
      b.op("Unsqueeze", `${prefix}/Unsqueeze`, [GRAPH_IO.pastLengths, b.int64Constant([1, 2, 3, 4])]),
    ]);
    return (positions.pastMask = this.maskAddend(prefix, visible));
  }

  /** Positions a past holds, room included, [1]: every layer's past has as many. Built once. */
  private capacity(positions: NewPositions, pastKey: string): string {
    return (positions.capacity ??= this.b.op("Shape", "/model/capacity", [pastKey], { start: 2, end: 3 }));
  }

  /** What masks a new score, added to it, [seq, seq]: 0 where the key is not after the query. Built once. */
  private newMask(positions: NewPositions): string {
    const { b } = this;
    if (positions.newMask) return positions.newMask;
    const prefix = "/model/new_mask";
    const seq = b.op("Squeeze", `${prefix}/seq`, [
      b.op("Shape", `${prefix}/Shape`, [positions.positions], { start: 1, end: 2 }),
      b.int64Constant([0]),
    ]);
    const steps = b.op("Range", `${prefix}/steps`, [
      b.int64Constant([0], true),
      seq,
      b.int64Constant([1], true),
    ]);
    const visible = b.op("LessOrEqual", `${prefix}/LessOrEqual`, [
      steps,
      b.op("Unsqueeze", `${prefix}/queries`, [steps, b.int64Constant([1])]),
    ]);
    return (positions.newMask = this.maskAddend(prefix, visible));
  }

  /** 0 where `visible`, the lowest float elsewhere: a softmax gives the latter no weight. */
  private maskAddend(prefix: string, visible: string): string {
    const { b } = this;
    return b.op("Where", `${prefix}/addend`, [
      visible,
      b.floatConstant([0], true),
      b.floatConstant([-3.4028234663852886e38], true),
    ]);
  }

  /** Qwen3's per-head RMSNorm: x [batch, seq, heads·d] normalised over each head's d values. */
  private headNorm(prefix: string, x: string, weight: WeightTensor, heads: number): string {
    const { b, config } = this;
    const perHead = b.op("Reshape", `${prefix}/heads`, [x, b.int64Constant([0, 0, heads, config.headDim])]);
    return b.op("Reshape", `${prefix}/merge_heads`, [
      this.rmsNorm(prefix, perHead, weight),
      b.int64Constant([0, 0, heads * config.headDim]),
    ]);
  }

  private mlp(prefix: string, x: string, w: Pick<LayerWeights, "gateProj" | "upProj" | "downProj">): string {
    const { b } = this;
    if (!w.gateProj || !w.upProj || !w.downProj)
      throw new InternalError(`${prefix}: dense MLP weights missing`);
    const gateUp = this.linear(`${prefix}/gate_up_proj`, x, concatRows([w.gateProj, w.upProj]));
    // An exit adapter's width is its own (exit-adapters.ts); a layer's is the config's.
    const size = w.gateProj.shape[0];
    const [gate, up] = b.node("Split", `${prefix}/Split`, [gateUp, b.int64Constant([size, size])], {
      outputs: 2,
      attributes: { axis: -1 },
    });
    const silu = b.op("Mul", `${prefix}/act/Mul`, [gate, b.op("Sigmoid", `${prefix}/act/Sigmoid`, [gate])]);
    const product = b.op("Mul", `${prefix}/Mul`, [silu, up]);
    return this.linear(`${prefix}/down_proj`, product, asLinear(w.downProj), { rotateW8a8Input: true });
  }

  /**
   * Mixtral's sparse MoE block: router logits, the top k experts per token with weights
   * softmax(top-k logits) (= softmax over all, renormalised over the k kept), and each
   * expert's SwiGLU run only on the rows routed to it: the rows are gathered (NonZero of
   * "routed here", GatherND), the expert's MLP runs on them — prepacked MatMul or
   * MatMulNBits, threaded, as for a dense MLP — and its weighted output is added back into
   * place (ScatterND, reduction add), expert by expert in ascending order as transformers
   * adds them. An expert no row chose runs on zero rows, which costs its operators' launch,
   * not its weights' reads. The chosen expert ids are a graph output
   * (GRAPH_IO.expertChoices), for activation counts.
   *
   * ONNX Runtime's own MoE kernel (com.microsoft.MoE, whose SwiGLU is Mixtral's) was
   * measured and not taken: it runs each expert's GEMM on one thread with a transposed,
   * repacked B per call, and decoded the `moe` benchmark's larger shape at 1.4× the
   * all-experts path where this one reaches the memory-bound figure.
   */
  private sparseMoe(prefix: string, x: string, w: LayerWeights, layer: number): string {
    const { b, config } = this;
    const experts = w.experts!;
    const h = config.hiddenSize;
    const { k, topIndices, topWeights } = this.router(prefix, x, w, layer);
    const rows = b.op("Reshape", `${prefix}/rows/Reshape`, [x, b.int64Constant([-1, h])]);
    const rowChoices = b.op("Reshape", `${prefix}/routing/choices/Reshape`, [
      topIndices,
      b.int64Constant([-1, k]),
    ]);
    const rowWeights = b.op("Reshape", `${prefix}/routing/weights/Reshape`, [
      topWeights,
      b.int64Constant([-1, k]),
    ]);
    // Routing for all experts at once, [rows, experts]: each row's weight for each expert
    // (0 where not chosen) and whether it was chosen.
    const oneHot = b.op("Equal", `${prefix}/routing/Equal`, [
      b.op("Unsqueeze", `${prefix}/routing/choices/Unsqueeze`, [rowChoices, b.int64Constant([-1])]),
      b.int64Constant(experts.map((_, e) => e)),
    ]);
    const expertWeights = b.op(
      "ReduceSum",
      `${prefix}/routing/weights/ReduceSum`,
      [
        b.op("Mul", `${prefix}/routing/weights/Mul`, [
          b.op("Cast", `${prefix}/routing/Cast`, [oneHot], { to: 1 }),
          b.op("Unsqueeze", `${prefix}/routing/weights/Unsqueeze`, [rowWeights, b.int64Constant([-1])]),
        ]),
        b.int64Constant([1]),
      ],
      { keepdims: 0 },
    );
    const routedTo = b.op(
      "ReduceMax",
      `${prefix}/routing/routed/ReduceMax`,
      [b.op("Cast", `${prefix}/routing/routed/Cast`, [oneHot], { to: 6 })],
      { axes: [1], keepdims: 0 },
    );
    // ConstantOfShape without a value: fp32 zeros.
    let mixed = b.op("ConstantOfShape", `${prefix}/zeros`, [b.op("Shape", `${prefix}/rows/Shape`, [rows])]);
    experts.forEach((expert, e) => {
      const p = `${prefix}/experts.${e}`;
      const column = (name: string, table: string) =>
        b.op("Gather", `${p}/${name}/Gather`, [table, b.int64Constant([e], true)], { axis: 1 });
      // [n, 1]: the rows routed to this expert, as GatherND/ScatterND indices.
      const indices = b.op(
        "Transpose",
        `${p}/rows/Transpose`,
        [b.op("NonZero", `${p}/rows/NonZero`, [column("routed", routedTo)])],
        { perm: [1, 0] },
      );
      const output = this.mlp(p, b.op("GatherND", `${p}/rows/GatherND`, [rows, indices]), expert);
      const rowWeight = b.op("GatherND", `${p}/weight/GatherND`, [column("weight", expertWeights), indices]);
      const weighted = b.op("Mul", `${p}/Mul`, [
        output,
        b.op("Unsqueeze", `${p}/weight/Unsqueeze`, [rowWeight, b.int64Constant([1])]),
      ]);
      mixed = b.op("ScatterND", `${p}/ScatterND`, [mixed, indices, weighted], { reduction: "add" });
    });
    return b.op("Reshape", `${prefix}/Reshape`, [mixed, b.op("Shape", `${prefix}/Shape`, [x])]);
  }

  /**
   * An MoE block whose experts run outside the graph: the router and its choices, and what
   * the experts and the combine need, as outputs (graph-io-names.ts). The engine adds
   * Σ weight·expert(moe_input) to moe_residual, in ascending expert order as sparseMoe.
   */
  private hostRoutedMoe(prefix: string, residual: string, x: string, w: LayerWeights, layer: number): void {
    const h = this.config.hiddenSize;
    const { k, topWeights } = this.router(prefix, x, w, layer);
    this.outputAlias(topWeights, GRAPH_IO.expertWeights(layer), ["batch", "seq", k]);
    this.outputAlias(x, GRAPH_IO.moeInput(layer), ["batch", "seq", h]);
    this.outputAlias(residual, GRAPH_IO.moeResidual(layer), ["batch", "seq", h]);
  }

  /**
   * One expert of one layer as a graph of its own, expert_in [rows, hidden] → expert_out:
   * the same SwiGLU operators (and weight format) as the sparse block runs in-graph.
   */
  writeExpert(layer: number, expert: number): BuiltGraph {
    const { b, config } = this;
    const weights = this.weights.layers[layer].experts?.[expert];
    if (!weights) throw new InternalError(`layer ${layer} has no expert ${expert}`);
    const x = b.input(GRAPH_IO.expertIn, "float32", ["rows", config.hiddenSize]);
    const out = this.mlp(`/model/layers.${layer}/block_sparse_moe/experts.${expert}`, x, weights);
    this.outputAlias(out, GRAPH_IO.expertOut, ["rows", config.hiddenSize]);
    for (const t of [weights.gateProj, weights.upProj, weights.downProj]) t.release?.();
    return b.build();
  }

  /**
   * An MoE block's router, as every execution of the block has it: the gate's logits, the
   * top k experts of each position (a graph output) and their weights.
   */
  private router(
    prefix: string,
    x: string,
    w: LayerWeights,
    layer: number,
  ): { k: number; logits: string; topIndices: string; topWeights: string } {
    const k = this.config.numExpertsPerToken ?? 2;
    const logits = this.linear(`${prefix}/gate`, x, asLinear(w.router!));
    const [topLogits, topIndices] = this.expertChoices(prefix, logits, k, layer);
    return { k, logits, topIndices, topWeights: this.routingWeights(prefix, logits, topLogits, topIndices) };
  }

  /**
   * The chosen experts' weights: softmax over the top k logits (= softmax over all,
   * renormalised over the k kept; Mixtral, Qwen3-MoE with norm_topk_prob), or each chosen
   * expert's softmax probability over all experts (Qwen3-MoE without it).
   */
  private routingWeights(prefix: string, logits: string, topLogits: string, topIndices: string): string {
    const { b, config } = this;
    if (config.normalizeTopK !== false)
      return b.op("Softmax", `${prefix}/routing/Softmax`, [topLogits], { axis: -1 });
    const probabilities = b.op("Softmax", `${prefix}/routing/Softmax`, [logits], { axis: -1 });
    return b.op("GatherElements", `${prefix}/routing/GatherElements`, [probabilities, topIndices], {
      axis: -1,
    });
  }

  /** The top k experts of each position, as the graph output GRAPH_IO.expertChoices. */
  private expertChoices(prefix: string, logits: string, k: number, layer: number): [string, string] {
    const { b } = this;
    const [topLogits, topIndices] = b.node("TopK", `${prefix}/TopK`, [logits, b.int64Constant([k])], {
      outputs: [
        `${prefix}/TopK/values`,
        b.output(GRAPH_IO.expertChoices(layer), "int64", ["batch", "seq", k]),
      ],
      attributes: { axis: -1, largest: 1, sorted: 1 },
    });
    return [topLogits, topIndices];
  }

  /**
   * The same block with every expert run on every token and the unchosen ones' weights
   * zero: exact, but numExperts/k times the MLP compute. What MoE segments ran before the
   * sparse block, kept for the `moe` benchmark's comparison.
   */
  private allExpertsMoe(prefix: string, x: string, w: LayerWeights, layer: number): string {
    const { b } = this;
    const experts = w.experts!;
    const { logits, topIndices, topWeights } = this.router(prefix, x, w, layer);
    // Dense [batch, seq, experts] weights: zero except at the chosen experts.
    const zeros = b.op("Sub", `${prefix}/routing/zeros`, [logits, logits]);
    const weights = b.op(
      "ScatterElements",
      `${prefix}/routing/ScatterElements`,
      [zeros, topIndices, topWeights],
      {
        axis: -1,
      },
    );
    let sum: string | undefined;
    experts.forEach((expert, e) => {
      const expertPrefix = `${prefix}/experts.${e}`;
      const output = this.mlp(expertPrefix, x, expert);
      const weight = b.op("Gather", `${expertPrefix}/weight/Gather`, [weights, b.int64Constant([e])], {
        axis: -1,
      });
      const weighted = b.op("Mul", `${expertPrefix}/Mul`, [output, weight]);
      sum = sum === undefined ? weighted : b.op("Add", `${expertPrefix}/Add`, [sum, weighted]);
    });
    return sum!;
  }

  /**
   * x · Wᵀ for a Hugging Face [out, in] weight, in the segment's weight format: fp32
   * MatMul, int8 or int4 blocks (MatMulNBits), or w8a8 (channelInt8Linear).
   */
  private linear(prefix: string, x: string, weight: LinearWeight, options: LinearOptions = {}): string {
    const { b, spec } = this;
    if (spec.weightFormat === "fp32") {
      const name = this.linearInitializers.get(weight.name) ?? [
        b.initializer(
          `${weight.name}.T`,
          "float32",
          [weight.cols, weight.rows],
          transpose(weight.read(0, weight.rows), weight.rows, weight.cols),
        ),
      ];
      this.linearInitializers.set(weight.name, name);
      return b.op("MatMul", `${prefix}/MatMul`, [x, name[0]]);
    }
    if (spec.weightFormat === "w8a8")
      return this.channelInt8Linear(prefix, x, weight, options.rotateW8a8Input ?? false);
    return this.nbitsLinear(prefix, x, weight, spec.weightFormat === "int8" ? 8 : 4);
  }

  /** x · Wᵀ through MatMulNBits: W in blocks of `bits`, one scale per block. */
  private nbitsLinear(prefix: string, x: string, weight: LinearWeight, bits: 4 | 8): string {
    const { b } = this;
    const quantized = this.quantizedWeight(weight, bits);
    return b.op(
      "MatMulNBits",
      `${prefix}/MatMulNBits`,
      [x, quantized.packed(), quantized.scales()],
      // accuracy_level 4: int8 activations inside the kernel, the fast CPU path.
      { K: weight.cols, N: weight.rows, bits, block_size: this.blockSize, accuracy_level: 4 },
      "com.microsoft",
    );
  }

  /**
   * x · Wᵀ with W in int8 per output channel (channel-int8-quantizer.ts) and x quantized
   * per row in the graph, symmetric around 128 in uint8 (MLAS's fast GEMM is u8 × s8):
   *
   *   s = max|x_row| / 127;  q = round(x / s) + 128;  y = (q − 128) · B · diag(scales) · s
   *
   * MatMulIntegerToFloat applies the column scales; the row scale follows. Per row, not
   * per tensor (DynamicQuantizeMatMul, as fast here): one outlier position of a prompt
   * must not coarsen every other position, and a session's logits must not depend on
   * which sessions share its batch.
   *
   * With `rotate`, x and W's rows are first turned by the same randomized block Hadamard
   * rotation (QuaRot's online rotation of down_proj's input): x·Wᵀ is unchanged, and a row's
   * few large values — SwiGLU's products peak at ~10× their RMS, in no fixed channel — are
   * spread over their block, so the row's one scale fits the rest. On the demo model it
   * cut down_proj's output error from 2.0% to 0.8% of its norm (the other linears' inputs,
   * normed or attention outputs, gained nothing). W is rotated at build time, x in the
   * graph by a MatMul with the [b, b] Hadamard matrix, b ≤ W8A8_ROTATION_BLOCK.
   */
  private channelInt8Linear(prefix: string, x: string, weight: LinearWeight, rotate: boolean): string {
    const { b } = this;
    // A width with no even factor has nothing to rotate (a block of 1 is the identity).
    const rotation =
      rotate && rotationBlock(weight.cols, W8A8_ROTATION_BLOCK) > 1
        ? new HadamardRotation(weight.cols, W8A8_ROTATION_BLOCK)
        : undefined;
    const input = rotation ? this.rotated(`${prefix}/rotate`, x, rotation) : x;
    const [levels, channelScales] =
      this.linearInitializers.get(weight.name) ??
      this.channelInt8Initializers(rotation ? rotatedRows(weight, rotation) : weight);
    this.linearInitializers.set(weight.name, [levels, channelScales]);
    const absmax = b.op("ReduceMax", `${prefix}/row_absmax`, [b.op("Abs", `${prefix}/Abs`, [input])], {
      axes: [-1],
      keepdims: 1,
    });
    // The tiny term keeps an all-zero row's scale finite; it is below any real absmax / 127.
    const rowScale = b.op("Add", `${prefix}/row_scale`, [
      b.op("Mul", `${prefix}/row_scale/Mul`, [absmax, b.floatConstant([1 / INT8_MAX_LEVEL], true)]),
      b.floatConstant([1e-30], true),
    ]);
    const shifted = b.op("Add", `${prefix}/quantize/Add`, [
      b.op("Round", `${prefix}/quantize/Round`, [b.op("Div", `${prefix}/quantize/Div`, [input, rowScale])]),
      b.floatConstant([UINT8_ZERO_POINT], true),
    ]);
    const quantized = b.op("Cast", `${prefix}/quantize/Cast`, [shifted], { to: ONNX_UINT8 });
    const product = b.op(
      "MatMulIntegerToFloat",
      `${prefix}/MatMulIntegerToFloat`,
      [quantized, levels, b.floatConstant([1], true), channelScales, this.uint8ZeroPoint()],
      {},
      "com.microsoft",
    );
    return b.op("Mul", `${prefix}/row_scale/apply`, [product, rowScale]);
  }

  /**
   * x · D · H per block of `rotation.block` values of each row (x of any rank, last axis
   * the rotation's dim): the signs, then the blocks as rows of a MatMul with H.
   */
  private rotated(prefix: string, x: string, rotation: HadamardRotation): string {
    const { b } = this;
    const { dim, block } = rotation;
    const signs = (this.rotationSignNames[dim] ??= b.initializer(
      `/rotation/signs_${dim}`,
      "float32",
      [dim],
      rotationSigns(dim),
    ));
    const hadamard = (this.hadamardNames[block] ??= b.initializer(
      `/rotation/hadamard_${block}`,
      "float32",
      [block, block],
      hadamardMatrix(block),
    ));
    const blocks = b.op("Reshape", `${prefix}/blocks`, [
      b.op("Mul", `${prefix}/signs`, [x, signs]),
      b.int64Constant([-1, block]),
    ]);
    return b.op("Reshape", `${prefix}/rows`, [
      b.op("MatMul", `${prefix}/MatMul`, [blocks, hadamard]),
      b.op("Shape", `${prefix}/Shape`, [x]),
    ]);
  }

  private readonly hadamardNames: Record<number, string> = {};
  private readonly rotationSignNames: Record<number, string> = {};

  /** A weight's [cols, rows] int8 levels and [rows] scales, quantized a block of rows at a time. */
  private channelInt8Initializers(weight: LinearWeight): string[] {
    const { b } = this;
    const quantized = channelInt8Weight(weight.rows, weight.cols);
    for (const [begin, end] of rowBlocks(weight.rows, weight.cols))
      quantizeChannelRows(quantized, begin, weight.read(begin, end));
    return [
      b.initializer(`${weight.name}.c8`, "int8", [weight.cols, weight.rows], quantized.transposed),
      b.initializer(`${weight.name}.c8.scales`, "float32", [weight.rows], quantized.scales),
    ];
  }

  private uint8ZeroPointName?: string;

  /** The activations' zero point, one uint8 scalar shared by every int8 linear. */
  private uint8ZeroPoint(): string {
    return (this.uint8ZeroPointName ??= this.b.initializer(
      "/constants/uint8_zero_point",
      "uint8",
      [],
      new Uint8Array([UINT8_ZERO_POINT]),
    ));
  }

  private onesName?: string;

  /** A gamma of ones, for normalisation without a learned scale. */
  private onesVector(): string {
    return (this.onesName ??= this.b.initializer(
      "/constants/ones_hidden",
      "float32",
      [this.config.hiddenSize],
      new Float32Array(this.config.hiddenSize).fill(1),
    ));
  }

  private rmsNorm(prefix: string, x: string, weight: WeightTensor): string {
    const { b } = this;
    // The final norm serves every exit: write its weight once.
    const gamma =
      this.normInitializers.get(weight.name) ??
      b.initializer(weight.name, "float32", [weight.data.length], weight.data);
    this.normInitializers.set(weight.name, gamma);
    return b.op("SimplifiedLayerNormalization", `${prefix}/SimplifiedLayerNormalization`, [x, gamma], {
      axis: -1,
      epsilon: { float: this.config.rmsNormEps },
      stash_type: 1,
    });
  }

  private lmHead(x: string): string {
    const { config } = this;
    const head = this.weights.lmHead;
    const prefix = "/model/lm_head";
    // A quantized head is in MatMulNBits's blocks, w8a8's too: a tied 8-bit one multiplies
    // by the embedding table's own bytes.
    if (this.spec.weightFormat !== "fp32")
      return this.nbitsLinear(prefix, x, asLinear(head), headBits(this.spec));
    // Gemm with transB reads the [vocab, hidden] table as stored, so a tied LM head shares
    // the embedding table's bytes instead of keeping a transposed copy.
    const { b } = this;
    const table =
      this.weights.lmHead === this.weights.embedTokens && this.tableInitializer
        ? this.tableInitializer()
        : (this.lmHeadName ??= this.streamedTable(head.name, asLinear(head)));
    const flat = b.op("Reshape", `${prefix}/flatten`, [x, b.int64Constant([-1, config.hiddenSize])]);
    const logits2d = b.op("Gemm", `${prefix}/Gemm`, [flat, table], { transB: 1 });
    const shape = b.op("Shape", `${prefix}/Shape`, [x], { end: -1 });
    const outShape = b.op("Concat", `${prefix}/out_shape`, [shape, b.int64Constant([config.vocabSize])], {
      axis: 0,
    });
    return b.op("Reshape", `${prefix}/unflatten`, [logits2d, outShape]);
  }

  /*
   *   h ──► [last position] ──► [linear map | adapter] ──► final RMSNorm ──► LM head ──► logits
   *   logits ──► TopK(2) ─┬─► token (top-1 id)
   *                       └─► softmax at the top two ──► prob, margin = p1 − p2
   *   logits ──► logsumexp (= top logit − log p1) − Σ softmax·logits ──► entropy
   *   logits, previous exit's logits ──► KL(this ‖ previous) ──► kl_previous
   * The previous exit is the nearest earlier one in this graph (none for the first, and no
   * KL at the final head): how far the distribution moved since then says how settled it
   * is (confidence-model.ts).
   */
  private exitHead(
    exit: ExitHeadSpec,
    x: string,
    attentionInputs?: { rotary: RotaryCaches; positions: NewPositions },
  ): void {
    const { b, config, spec } = this;
    const k = exit.afterLayer;
    const prefix = `/exit.${k}`;
    let h = x;
    const adapter = exit.linearMap ? undefined : this.weights.exitAdapters?.get(k);
    if (adapter?.attention) {
      // The adapter's attention runs at every new position, before the head keeps only
      // the last ones: each position's keys and values go into the adapter's own cache.
      if (!attentionInputs)
        throw new InternalError(`exit ${k}: an attending exit adapter in a graph without layers`);
      h = this.attentionHalf(
        `${prefix}/adapter`,
        h,
        adapter.attention,
        {
          pastKey: GRAPH_IO.exitPastKey(k),
          pastValue: GRAPH_IO.exitPastValue(k),
          newKey: GRAPH_IO.exitNewKey(k),
          newValue: GRAPH_IO.exitNewValue(k),
          qkvBias: `exit_adapters.${k}.qkv_bias`,
        },
        attentionInputs.rotary,
        attentionInputs.positions,
      );
    }
    if (spec.positions !== "all") {
      // The last position, or the last head_positions of each row (from −n to the end).
      const from =
        spec.positions === "last"
          ? b.int64Constant([-1])
          : b.op("Neg", `${prefix}/tail_positions/Neg`, [GRAPH_IO.headPositions]);
      h = b.op("Slice", `${prefix}/last_positions`, [
        h,
        from,
        b.int64Constant([2 ** 31 - 1]),
        b.int64Constant([1]),
      ]);
    }
    if (adapter) {
      // The model's own exit block: h + SwiGLU(RMSNorm(h)), in the segment's weight format.
      const normed = this.rmsNorm(`${prefix}/adapter/norm`, h, adapter.norm);
      h = b.op("Add", `${prefix}/adapter/residual/Add`, [
        h,
        this.mlp(`${prefix}/adapter/mlp`, normed, adapter),
      ]);
    }
    if (exit.linearMap) {
      const weight = b.initializer(
        `exit.${k}.linear.weight`,
        "float32",
        [config.hiddenSize, config.hiddenSize],
        exit.linearMap.weight,
      );
      const bias = b.initializer(
        `exit.${k}.linear.bias`,
        "float32",
        [config.hiddenSize],
        exit.linearMap.bias,
      );
      // The map works on unit-RMS hidden states (what calibration fits): the scale of a
      // hidden state carries nothing the final RMSNorm would not remove anyway.
      const unit = b.op("SimplifiedLayerNormalization", `${prefix}/linear/unit_rms`, [h, this.onesVector()], {
        axis: -1,
        epsilon: { float: config.rmsNormEps },
        stash_type: 1,
      });
      h = b.op("Add", `${prefix}/linear/Add`, [
        b.op("MatMul", `${prefix}/linear/MatMul`, [unit, weight]),
        bias,
      ]);
    }
    const normed = this.rmsNorm(`${prefix}/norm`, h, this.weights.finalNorm);
    const logits = this.lmHead(normed);
    const positions = { last: 1, all: "seq", tail: "head_positions" }[spec.positions];

    const [topValues, topIndices] = b.node("TopK", `${prefix}/TopK`, [logits, b.int64Constant([2])], {
      outputs: 2,
      attributes: { axis: -1, largest: 1, sorted: 1 },
    });
    // The log-sum-exp from the softmax, not from ReduceLogSumExp: softmax's top
    // probability is p1 = exp(x1 − lse), so lse = x1 − log p1. ONNX Runtime's
    // ReduceLogSumExp runs on one thread at ~8 ns an element — 0.25 ms a step over a
    // 32k vocabulary, as much as one layer's weights — where Softmax takes ~20 µs.
    const probs = b.op("Softmax", `${prefix}/Softmax`, [logits], { axis: -1 });
    const topProbs = b.op("GatherElements", `${prefix}/top_probs`, [probs, topIndices], { axis: -1 });
    const [p1, p2] = b.node("Split", `${prefix}/top_probs/Split`, [topProbs, b.int64Constant([1, 1])], {
      outputs: 2,
      attributes: { axis: -1 },
    });
    const [top1Value] = b.node("Split", `${prefix}/top_values/Split`, [topValues, b.int64Constant([1, 1])], {
      outputs: 2,
      attributes: { axis: -1 },
    });
    const logSumExp = b.op("Sub", `${prefix}/log_sum_exp`, [
      top1Value,
      b.op("Log", `${prefix}/top_probs/Log`, [p1]),
    ]);
    const squeezeAxis = b.int64Constant([-1]);
    b.node("Squeeze", `${prefix}/prob`, [p1, squeezeAxis], {
      outputs: [b.output(GRAPH_IO.exitOutput(k, "prob"), "float32", ["batch", positions])],
    });
    const margin = b.op("Sub", `${prefix}/margin/Sub`, [p1, p2]);
    b.node("Squeeze", `${prefix}/margin`, [margin, squeezeAxis], {
      outputs: [b.output(GRAPH_IO.exitOutput(k, "margin"), "float32", ["batch", positions])],
    });
    const [top1] = b.node("Split", `${prefix}/top1/Split`, [topIndices, b.int64Constant([1, 1])], {
      outputs: 2,
      attributes: { axis: -1 },
    });
    b.node("Squeeze", `${prefix}/token`, [top1, squeezeAxis], {
      outputs: [b.output(GRAPH_IO.exitOutput(k, "token"), "int64", ["batch", positions])],
    });

    const expected = b.op(
      "ReduceSum",
      `${prefix}/entropy/ReduceSum`,
      [b.op("Mul", `${prefix}/entropy/Mul`, [probs, logits]), squeezeAxis],
      { keepdims: 1 },
    );
    const entropy = b.op("Sub", `${prefix}/entropy/Sub`, [logSumExp, expected]);
    b.node("Squeeze", `${prefix}/entropy`, [entropy, squeezeAxis], {
      outputs: [b.output(GRAPH_IO.exitOutput(k, "entropy"), "float32", ["batch", positions])],
    });

    // The final head's own KL would be read by nothing: confidence models sit at early exits.
    const previous = k < config.numLayers ? this.previousExitHead : undefined;
    if (previous) {
      // KL(p‖q) = Σ p·(log p − log q) = Σ p·(logits − previous logits) − lse + previous lse.
      const moved = b.op(
        "ReduceSum",
        `${prefix}/kl_previous/ReduceSum`,
        [
          b.op("Mul", `${prefix}/kl_previous/Mul`, [
            probs,
            b.op("Sub", `${prefix}/kl_previous/Sub`, [logits, previous.logits]),
          ]),
          squeezeAxis,
        ],
        { keepdims: 1 },
      );
      const kl = b.op("Add", `${prefix}/kl_previous/Add`, [
        b.op("Sub", `${prefix}/kl_previous/Sub_lse`, [moved, logSumExp]),
        previous.logSumExp,
      ]);
      b.node("Squeeze", `${prefix}/kl_previous`, [kl, squeezeAxis], {
        outputs: [b.output(GRAPH_IO.exitOutput(k, "kl_previous"), "float32", ["batch", positions])],
      });
    }
    this.previousExitHead = { logits, logSumExp };

    if (spec.logits)
      this.outputAlias(logits, GRAPH_IO.exitOutput(k, "logits"), ["batch", positions, config.vocabSize]);
  }

  private outputAlias(value: string, name: string, shape: (number | string)[]): void {
    this.b.node("Identity", `/outputs/${name}`, [value], {
      outputs: [this.b.output(name, "float32", shape)],
    });
  }
}

/** Drops the decoded values of a written layer's tensors (decoded again if read again). */
function releaseLayer(w: LayerWeights): void {
  const tensors = [
    w.inputNorm,
    w.qProj,
    w.kProj,
    w.vProj,
    w.oProj,
    w.qBias,
    w.kBias,
    w.vBias,
    w.qNorm,
    w.kNorm,
    w.postAttentionNorm,
    w.gateProj,
    w.upProj,
    w.downProj,
    w.router,
    ...(w.experts ?? []).flatMap((e) => [e.gateProj, e.upProj, e.downProj]),
  ];
  for (const tensor of tensors) tensor?.release?.();
}

/** The weights of an attention half: a decoder layer's, or an attending exit adapter's. */
type AttentionHalfWeights = Pick<LayerWeights, "inputNorm" | "qProj" | "kProj" | "vProj" | "oProj"> &
  Partial<Pick<LayerWeights, "qBias" | "kBias" | "vBias" | "qNorm" | "kNorm">>;

/** The graph names an attention half's cache goes by, and its fused q/k/v bias's. */
interface AttentionNames {
  pastKey: string;
  pastValue: string;
  newKey: string;
  newValue: string;
  qkvBias: string;
}

interface RotaryCaches {
  cos: string;
  sin: string;
}

/** Values derived from the new tokens' positions, each built once per graph when first needed. */
interface NewPositions {
  positions: string;
  capacity?: string;
  pastMask?: string;
  newMask?: string;
}

function transpose(data: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const rowOffset = r * cols;
    for (let c = 0; c < cols; c++) out[c * rows + r] = data[rowOffset + c];
  }
  return out;
}

/** A Hugging Face linear weight: row-major [rows = out_features, cols = in_features], read by rows. */
interface LinearWeight {
  name: string;
  rows: number;
  cols: number;
  /** Rows [begin, end) as fp32; the caller may not keep a view into a checkpoint's own data. */
  read(begin: number, end: number): Float32Array;
}

/** A checkpoint tensor as a linear weight: rows decoded on their own where the file allows. */
/**
 * Writes a [rows, cols] fp32 table as stored into the external data, converted a block of
 * rows at a time (so a 1 GB table is never whole). A function of its own so that no
 * closure that outlives the call holds the table.
 */
function writeFloatRows(b: OnnxGraphBuilder, table: LinearWeight): ExternalRegion {
  const { rows, cols } = table;
  return b.externalBytes(table.name, rows * cols * 4, (append) => {
    for (const [begin, end] of rowBlocks(rows, cols)) {
      const part = table.read(begin, end);
      append(new Uint8Array(part.buffer, part.byteOffset, part.byteLength));
    }
  });
}

/**
 * Quantizes `weight` into the external data, a block of rows at a time (each row's blocks
 * are its own, so a 1 GB table is never whole): its packed blocks, then their scales. A
 * function of its own so that no closure that outlives the call holds the weight's values.
 */
function writeQuantized(
  b: OnnxGraphBuilder,
  weight: LinearWeight,
  bits: 4 | 8,
  blockSize: number,
): { packed: ExternalRegion; scales: ExternalRegion } {
  const { rows, cols } = weight;
  const blocksPerRow = Math.ceil(cols / blockSize);
  const blob = (blockSize * bits) / 8;
  // Filled as the packed blocks stream out, written after them.
  const scales = new Float32Array(rows * blocksPerRow);
  const packed = b.externalBytes(`${weight.name}.q${bits}`, rows * blocksPerRow * blob, (append) => {
    for (const [begin, end] of rowBlocks(rows, cols)) {
      const q = quantizeNBits(weight.read(begin, end), end - begin, cols, bits, blockSize);
      scales.set(q.scales, begin * blocksPerRow);
      append(q.packed);
    }
  });
  const scaleRegion = b.externalBytes(`${weight.name}.q${bits}.scales`, scales.byteLength, (append) =>
    append(new Uint8Array(scales.buffer)),
  );
  return { packed, scales: scaleRegion };
}

/** What a quantized weight is cached under: one copy per weight and bit width. */
function quantizedKey(weight: LinearWeight, bits: 4 | 8): string {
  return `${weight.name}|q${bits}`;
}

function asLinear(t: WeightTensor): LinearWeight {
  const cols = t.shape[1];
  return {
    name: t.name,
    rows: t.shape[0],
    cols,
    read: (begin, end) => (t.rows ? t.rows(begin, end) : t.data.subarray(begin * cols, end * cols)),
  };
}

/** Options of one linear layer. */
interface LinearOptions {
  /** w8a8 only: rotate the input and the weight's rows first (channelInt8Linear). @default false */
  rotateW8a8Input?: boolean;
}

/** `weight` with each row rotated as the graph rotates its input (x·Wᵀ = (x·D·H)·(W·D·H)ᵀ). */
function rotatedRows(weight: LinearWeight, rotation: HadamardRotation): LinearWeight {
  return {
    ...weight,
    read: (begin, end) => rotation.rotate(weight.read(begin, end), end - begin),
  };
}

/** The zero point of per-row uint8 activations: levels 1..255 around it. */
const UINT8_ZERO_POINT = 128;
/** ONNX TensorProto.DataType UINT8, for Cast. */
const ONNX_UINT8 = 2;

/** Values converted at once when a table goes block by block: 16 MB of fp32. */
const ROW_BLOCK_VALUES = 4 * 2 ** 20;

/** [begin, end) row ranges of about ROW_BLOCK_VALUES values each, covering [0, rows). */
function rowBlocks(rows: number, cols: number): [number, number][] {
  const step = Math.max(1, Math.floor(ROW_BLOCK_VALUES / cols));
  const blocks: [number, number][] = [];
  for (let begin = 0; begin < rows; begin += step) blocks.push([begin, Math.min(rows, begin + step)]);
  return blocks;
}

/** Stacks [out_i, in] weights into one [Σ out_i, in] weight (fused QKV, fused gate/up). */
function concatRows(parts: WeightTensor[]): LinearWeight {
  const cols = parts[0].shape[1];
  const rows = parts.reduce((sum, p) => sum + p.shape[0], 0);
  const data = new Float32Array(rows * cols);
  let offset = 0;
  for (const p of parts) {
    data.set(p.data, offset);
    offset += p.data.length;
  }
  const name = parts[0].name.replace(/\.(q_proj|gate_proj)\.weight$/, (_, n: string) =>
    n === "q_proj" ? ".qkv_proj.weight" : ".gate_up_proj.weight",
  );
  return { name, rows, cols, read: (begin, end) => data.subarray(begin * cols, end * cols) };
}

function concatVectors(parts: WeightTensor[]): Float32Array {
  const out = new Float32Array(parts.reduce((sum, p) => sum + p.data.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p.data, offset);
    offset += p.data.length;
  }
  return out;
}
