/**
 * The weights of the `w8a8` format, in the layout of ONNX Runtime's MatMulIntegerToFloat:
 * B is [K, N] int8 (the Hugging Face [out, in] weight transposed), symmetric, one fp32
 * scale per output channel (column of B), scale = absmax / 63 (W8A8_WEIGHT_MAX_LEVEL) and
 * no zero point. The
 * activations are quantized per row in the graph (segment-graph.ts, channelInt8Linear).
 *
 * Why a format beside int8's MatMulNBits blocks: on an AVX2 CPU without VNNI, a 2048×8192
 * linear on 128 rows ran at 244–262 GFLOPS on one core through this path (the per-row
 * quantization and MLAS's u8×s8 GEMM behind MatMulIntegerToFloat) where 8-bit
 * MatMulNBits ran it at 117, and a single row no slower. What it
 * gives up: one activation scale per row instead of per 32 values, so a row's outliers
 * coarsen all of it. Unrotated that cost the demo model's greedy agreement with fp32 0.982
 * against int8's 0.992 over 4,000 held-out positions, nearly all of it at down_proj's
 * input; with that input rotated (segment-graph.ts) w8a8 agreed 0.990 with 8-bit weights
 * and 0.986 with the 7-bit ones below (int8 0.993 in that run). Per-channel
 * weight scales cost one fp32 per row: 1.004 bytes per weight at hidden 1024, not 1.125.
 */

/**
 * The largest block w8a8's in-graph rotation of down_proj's input turns as one
 * (segment-graph.ts, channelInt8Linear): its fp32 MatMul costs `block` multiply-adds per
 * input value, against the integer GEMM's 2048 at Llama-3.2-1B's down_proj. Blocks of 128
 * added a quarter to that down_proj's time on 128 rows. On the demo model blocks of 32
 * and 64 (its largest: 704 = 11 × 64) spread the outliers alike (a layer's output error
 * 0.81% and 0.77%; agreement 0.9895 and 0.990); 64 keeps more of the spread for wider
 * models' heavier outliers (a value spread over b falls as 1/√b) at half 128's cost.
 */
export const W8A8_ROTATION_BLOCK = 64;

/** The largest level of a symmetric int8 value (w8a8's activations use the full range). */
export const INT8_MAX_LEVEL = 127;

/**
 * The largest level of a w8a8 weight: 7 bits, not 8 (ONNX Runtime's "reduce_range"). On
 * AVX2 without VNNI, MLAS's u8×s8 GEMM sums pairs of products in int16 (VPMADDUBSW), which
 * saturates at 32767: two activations of up to 255 (uint8 around 128) by weights of 127
 * reach 64770. Measured on an AMD EPYC (AVX2 only): with 127, logits erred by up to 25% of
 * the largest; with 63 (2 × 255 × 63 = 32130 fits) they stay within int8's bound (5% of
 * the largest), at the cost of a coarser weight grid: the logits' RMS error, relative to
 * their RMS, up to 0.032 on the test models where int8's is ~0.02.
 */
export const W8A8_WEIGHT_MAX_LEVEL = 63;

export interface ChannelInt8Weight {
  /** N: output features (rows of the Hugging Face [out, in] weight). */
  rows: number;
  /** K: input features. */
  cols: number;
  /** [cols, rows] int8: the weight transposed, as MatMul's B. */
  transposed: Int8Array;
  /** [rows] fp32: one scale per output channel. */
  scales: Float32Array;
}

/** An empty [cols, rows] weight to fill a block of rows at a time (quantizeChannelRows). */
export function channelInt8Weight(rows: number, cols: number): ChannelInt8Weight {
  return { rows, cols, transposed: new Int8Array(rows * cols), scales: new Float32Array(rows) };
}

/**
 * Quantizes rows [begin, begin + count) of a row-major Hugging Face weight, given as
 * `values` ([count, cols] fp32), into `into`: each row's scale is its absmax /
 * W8A8_WEIGHT_MAX_LEVEL.
 */
export function quantizeChannelRows(into: ChannelInt8Weight, begin: number, values: Float32Array): void {
  const { rows, cols, transposed, scales } = into;
  const count = values.length / cols;
  for (let r = 0; r < count; r++) {
    const offset = r * cols;
    let absmax = 0;
    for (let c = 0; c < cols; c++) absmax = Math.max(absmax, Math.abs(values[offset + c]));
    const scale = absmax / W8A8_WEIGHT_MAX_LEVEL;
    const inverse = scale !== 0 ? 1 / scale : 0;
    const row = begin + r;
    scales[row] = scale;
    for (let c = 0; c < cols; c++) transposed[c * rows + row] = Math.round(values[offset + c] * inverse);
  }
}

/** The fp32 [rows, cols] weight the kernel effectively multiplies by; for tests and error figures. */
export function dequantizeChannelInt8(q: ChannelInt8Weight): Float32Array {
  const out = new Float32Array(q.rows * q.cols);
  for (let r = 0; r < q.rows; r++)
    for (let c = 0; c < q.cols; c++) out[r * q.cols + c] = q.transposed[c * q.rows + r] * q.scales[r];
  return out;
}
