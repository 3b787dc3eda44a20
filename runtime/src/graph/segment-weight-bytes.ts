/**
 * The bytes of a segment graph's weights, from the model's shape alone: exactly what
 * buildSegmentGraph writes as initializers (segment-graph.ts), without reading or
 * converting a single weight. This is the "weight bytes in the chosen format" of the
 * memory target (a process's RSS ≤ 1.2 × these + its KV + 150 MB), and what
 * `tandem inspect` reports per split and format.
 *
 * Counted: every weight initializer, and the embedding table of a segment from layer 0,
 * which the engine reads rows from itself (no initializer holds it unless a tied head
 * multiplies by it). Not counted: the builder's own int64 and float
 * constants (shapes, axes, the attention scale), a few hundred bytes that depend on the
 * graph's structure rather than its weights; and the 64-byte alignment padding between
 * tensors in the external data file (under 64 bytes per tensor).
 *
 * Keep in step with segment-graph.ts: segment-weight-bytes.test.ts builds graphs of every
 * family and format and compares.
 */
import type { ModelConfig } from "../checkpoint/model-config.ts";
import { rotationBlock } from "../codec/hadamard-rotation.ts";
import { W8A8_ROTATION_BLOCK } from "./channel-int8-quantizer.ts";
import {
  DEFAULT_QUANT_BLOCK_SIZE,
  headBits,
  segmentExits,
  type SegmentSpec,
  type WeightFormat,
} from "./segment-spec.ts";

const FLOAT32_BYTES = 4;

/** A segment's weight bytes, by where they sit in the graph. */
export interface SegmentWeightBytes {
  /**
   * The token embedding table, when the segment starts at layer 0: fp32 for fp32 weights,
   * else 8 bits block-wise with a scale per block (MatMulNBits's layout).
   */
  embedding: number;
  /** The rotary cos/sin caches, [maxPositions, headDim/2] fp32 each. */
  rotary: number;
  /** The decoder layers [fromLayer, toLayer): norms, attention, MLP or experts. */
  layers: number;
  /** The final norm and the LM head, once for every exit and the final head; 0 without either. */
  head: number;
  /** The exits' calibrated linear maps (hidden × hidden + hidden fp32 each, and one vector of ones). */
  exitMaps: number;
  /** The exits' adapters (exit-adapters.ts): a norm and a SwiGLU block each, in the segment's format. */
  exitAdapters: number;
  /** All of the above. */
  total: number;
  /**
   * What of `total` the process does not hold: the embedding table, whose rows the engine
   * reads from the weights file as tokens need them (engine/embedding-table.ts), unless a
   * tied head in the table's format multiplies by it — then the head's kernel holds it.
   */
  readOnDemand: number;
}

/**
 * The bytes of every weight initializer `buildSegmentGraph(config, …, spec)` writes.
 * @param exitAdapterWidths exit layer → the width of its adapter, for a model with exit
 *   adapters (the widths are in their file's header). @default none
 * @param attendingAdapters the exit layers whose adapter attends too (its attention half:
 *   an input norm, q/k/v fused and o_proj, as a layer's). @default none
 */
export function segmentWeightBytes(
  config: ModelConfig,
  spec: SegmentSpec,
  exitAdapterWidths: ReadonlyMap<number, number> = new Map(),
  attendingAdapters: ReadonlySet<number> = new Set(),
): SegmentWeightBytes {
  const h = config.hiddenSize;
  const blockSize = spec.quantBlockSize ?? DEFAULT_QUANT_BLOCK_SIZE;
  const linear = (rows: number, cols: number) => linearWeightBytes(rows, cols, spec.weightFormat, blockSize);
  const vector = (length: number) => length * FLOAT32_BYTES;

  const vocab = config.vocabSize;
  let embedding = 0;
  // A quantized table: 8-bit blocks and a scale per block.
  if (spec.fromLayer === 0)
    embedding = spec.weightFormat === "fp32" ? vector(vocab * h) : nbitsWeightBytes(vocab, h, 8, blockSize);
  const rotary = 2 * vector(config.maxPositions * (config.headDim / 2));

  const qRows = config.numHeads * config.headDim;
  const kvRows = config.numKvHeads * config.headDim;
  const m = config.intermediateSize;
  // Fused q/k/v and gate/up projections: one weight each, so one set of scales per row.
  const attentionHalf = vector(h) + linear(qRows + 2 * kvRows, h) + linear(h, qRows);
  let perLayer = vector(h) + attentionHalf;
  if (config.attentionBias) perLayer += vector(qRows + 2 * kvRows);
  if (config.queryKeyNorm) perLayer += 2 * vector(config.headDim);
  const expertMlp = linear(2 * m, h) + linear(h, m);
  if (config.numExperts !== undefined) {
    const experts = config.numExperts;
    perLayer += linear(experts, h) + experts * expertMlp;
  } else {
    perLayer += expertMlp;
  }
  let layers = (spec.toLayer - spec.fromLayer) * perLayer;
  // w8a8 rotates down_proj's input: D's signs and one Hadamard matrix, once per segment.
  const downRotationBlock = rotationBlock(m, W8A8_ROTATION_BLOCK);
  if (spec.weightFormat === "w8a8" && spec.toLayer > spec.fromLayer && downRotationBlock > 1)
    layers += vector(m) + vector(downRotationBlock * downRotationBlock);

  // Every exit and the final head share one final norm and one LM head. A head tied to the
  // embedding reads the segment's own table where the table is in the head's format (fp32
  // through Gemm transB; 8 bits through MatMulNBits, the table's blocks and scales as they
  // are); in a segment without the table, or a 4-bit int4 head beside the 8-bit table, it
  // is a copy of its own.
  const exits = segmentExits(spec, config);
  let head = 0;
  const sharesTable =
    exits.length > 0 && config.tieWordEmbeddings && spec.fromLayer === 0 && headBits(spec) === 8;
  if (exits.length > 0) head = vector(h) + (sharesTable ? 0 : headWeightBytes(vocab, h, spec));
  const maps = exits.filter((exit) => exit.linearMap).length;
  // The maps are fp32 MatMuls in every format (calibration fits them in fp32), and their
  // unit-RMS norm takes a gamma of ones, written once.
  const exitMaps = maps > 0 ? maps * (vector(h * h) + vector(h)) + vector(h) : 0;
  // An exit with a map runs the map instead of its adapter.
  let exitAdapters = 0;
  const rotations = new Set<string>();
  if (spec.weightFormat === "w8a8" && spec.toLayer > spec.fromLayer && downRotationBlock > 1)
    rotations.add(`signs ${m}`).add(`block ${downRotationBlock}`);
  for (const exit of exits) {
    const width = exitAdapterWidths.get(exit.afterLayer);
    if (width === undefined || exit.linearMap) continue;
    exitAdapters += vector(h) + linear(2 * width, h) + linear(h, width);
    if (attendingAdapters.has(exit.afterLayer)) exitAdapters += attentionHalf;
    // w8a8 rotates the adapter's down_proj input too; its signs and Hadamard matrix are
    // written once per width and block, shared with the layers' where they match.
    const block = rotationBlock(width, W8A8_ROTATION_BLOCK);
    if (spec.weightFormat === "w8a8" && block > 1) {
      if (!rotations.has(`signs ${width}`)) exitAdapters += vector(width);
      if (!rotations.has(`block ${block}`)) exitAdapters += vector(block * block);
      rotations.add(`signs ${width}`).add(`block ${block}`);
    }
  }

  return {
    embedding,
    rotary,
    layers,
    head,
    exitMaps,
    exitAdapters,
    total: embedding + rotary + layers + head + exitMaps + exitAdapters,
    readOnDemand: sharesTable ? 0 : embedding,
  };
}

/**
 * The bytes of a decoder layer's Hugging Face [rows, cols] linear weight in `format`:
 * fp32 transposed; int8 and int4 in MatMulNBits' blocks (nbitsWeightBytes); w8a8
 * transposed with one fp32 scale per row (channel-int8-quantizer.ts).
 */
export function linearWeightBytes(
  rows: number,
  cols: number,
  format: WeightFormat,
  blockSize: number,
): number {
  if (format === "fp32") return rows * cols * FLOAT32_BYTES;
  if (format === "w8a8") return rows * cols + rows * FLOAT32_BYTES;
  return nbitsWeightBytes(rows, cols, format === "int8" ? 8 : 4, blockSize);
}

/**
 * The bytes of the LM head: fp32 as stored, else MatMulNBits' blocks of 8 bits, or of 4
 * for an int4 head of 4 bits (headBits: by default where the segment has no final head) —
 * the head keeps blocks in every quantized format (segment-graph.ts).
 */
export function headWeightBytes(
  rows: number,
  cols: number,
  spec: Pick<SegmentSpec, "weightFormat" | "quantBlockSize" | "int4HeadBits" | "finalHead">,
): number {
  if (spec.weightFormat === "fp32") return rows * cols * FLOAT32_BYTES;
  return nbitsWeightBytes(rows, cols, headBits(spec), spec.quantBlockSize ?? DEFAULT_QUANT_BLOCK_SIZE);
}

/**
 * MatMulNBits' packed blocks [rows, ⌈cols / blockSize⌉, blockSize · bits / 8] (a row's
 * last block padded) and one fp32 scale per block.
 */
export function nbitsWeightBytes(rows: number, cols: number, bits: 4 | 8, blockSize: number): number {
  const blocks = rows * Math.ceil(cols / blockSize);
  return blocks * ((blockSize * bits) / 8) + blocks * FLOAT32_BYTES;
}

/** KV cache bytes per position over `layers` decoder layers: a key and a value per KV head, fp32. */
export function kvBytesPerPosition(config: ModelConfig, layers: number): number {
  // `layers`: the entries of a session's KV slot — an attending exit adapter's count too.
  return 2 * layers * config.numKvHeads * config.headDim * FLOAT32_BYTES;
}
