/**
 * Block-wise weight quantization in the layout of ONNX Runtime's MatMulNBits:
 * B is [N, blocksPerRow, blockSize * bits / 8] bytes, scales are [N * blocksPerRow],
 * and with no zero-point input the kernel dequantizes as (q - 2^(bits-1)) * scale.
 * Quantization is symmetric per block (scale = absmax / (2^(bits-1) - 1)); for 4 bits
 * two values share a byte, the even element in the low nibble.
 */

export interface NBitsWeight {
  bits: 4 | 8;
  blockSize: number;
  /** N: output features (rows of the Hugging Face [out, in] weight). */
  rows: number;
  /** K: input features. */
  cols: number;
  blocksPerRow: number;
  packed: Uint8Array;
  scales: Float32Array;
}

/** Quantizes a row-major [rows, cols] weight (Hugging Face `[out, in]`) block-wise. */
export function quantizeNBits(
  weight: Float32Array,
  rows: number,
  cols: number,
  bits: 4 | 8,
  blockSize: number,
): NBitsWeight {
  const blocksPerRow = Math.ceil(cols / blockSize);
  const blobSize = (blockSize * bits) / 8;
  const packed = new Uint8Array(rows * blocksPerRow * blobSize);
  const scales = new Float32Array(rows * blocksPerRow);
  const zeroPoint = 1 << (bits - 1);
  const maxLevel = zeroPoint - 1;
  for (let r = 0; r < rows; r++) {
    const rowOffset = r * cols;
    for (let b = 0; b < blocksPerRow; b++) {
      const start = b * blockSize;
      const end = Math.min(start + blockSize, cols);
      let absmax = 0;
      for (let c = start; c < end; c++) absmax = Math.max(absmax, Math.abs(weight[rowOffset + c]));
      const scale = absmax / maxLevel;
      const inverse = scale > 0 ? 1 / scale : 0;
      scales[r * blocksPerRow + b] = scale;
      const blobOffset = (r * blocksPerRow + b) * blobSize;
      for (let c = start; c < start + blockSize; c++) {
        // Padding past the row end quantizes to the zero point (value 0).
        const value = c < end ? weight[rowOffset + c] : 0;
        const level = Math.max(-maxLevel, Math.min(maxLevel, Math.round(value * inverse))) + zeroPoint;
        const index = c - start;
        if (bits === 8) {
          packed[blobOffset + index] = level;
        } else if ((index & 1) === 0) {
          packed[blobOffset + (index >> 1)] = level;
        } else {
          packed[blobOffset + (index >> 1)] |= level << 4;
        }
      }
    }
  }
  return { bits, blockSize, rows, cols, blocksPerRow, packed, scales };
}

/** The fp32 weight the kernel will effectively use; for tests and error measurements. */
export function dequantizeNBits(q: NBitsWeight): Float32Array {
  const out = new Float32Array(q.rows * q.cols);
  const blobSize = (q.blockSize * q.bits) / 8;
  const zeroPoint = 1 << (q.bits - 1);
  for (let r = 0; r < q.rows; r++) {
    for (let c = 0; c < q.cols; c++) {
      const b = Math.floor(c / q.blockSize);
      const index = c % q.blockSize;
      const blobOffset = (r * q.blocksPerRow + b) * blobSize;
      const level =
        q.bits === 8
          ? q.packed[blobOffset + index]
          : (q.packed[blobOffset + (index >> 1)] >> ((index & 1) * 4)) & 0xf;
      out[r * q.cols + c] = (level - zeroPoint) * q.scales[r * q.blocksPerRow + b];
    }
  }
  return out;
}
