/**
 * The reference model's KV cache: keys and values per absolute layer number, kept apart
 * from the forward so a segment's cache can be created, inspected, rolled back and passed
 * between forwards that each run only some of the layers (an edge segment, a cloud one).
 */
import { InvalidArgumentError } from "@tandem/common";

/**
 * Keys (after RoPE) and values per absolute layer number, each layer with its own length:
 * a segment's cache fills only the layers it runs; the others stay empty.
 */
export class ReferenceKvCache {
  readonly numLayers: number;
  /** numKvHeads · headDim: the width of one position's keys (and values). */
  readonly kvDim: number;
  private readonly keyData: Float32Array[];
  private readonly valueData: Float32Array[];
  private readonly lengths: number[];

  constructor(numLayers: number, kvDim: number) {
    this.numLayers = numLayers;
    this.kvDim = kvDim;
    this.keyData = Array.from({ length: numLayers }, () => new Float32Array(0));
    this.valueData = Array.from({ length: numLayers }, () => new Float32Array(0));
    this.lengths = new Array<number>(numLayers).fill(0);
  }

  /** Positions cached for `layer` (0 for a layer never run). */
  length(layer: number): number {
    return this.lengths[this.checkLayer(layer)];
  }

  /** `layer`'s keys after RoPE, [length, numKvHeads, headDim] row-major; a view valid until the next forward. */
  keys(layer: number): Float32Array {
    this.checkLayer(layer);
    return this.keyData[layer].subarray(0, this.lengths[layer] * this.kvDim);
  }

  /** `layer`'s values, [length, numKvHeads, headDim] row-major; a view valid until the next forward. */
  values(layer: number): Float32Array {
    this.checkLayer(layer);
    return this.valueData[layer].subarray(0, this.lengths[layer] * this.kvDim);
  }

  /** Forgets every position from `length` on, in every layer that holds more (a rollback). */
  truncate(length: number): void {
    if (!Number.isInteger(length) || length < 0)
      throw new InvalidArgumentError("length", `must be a non-negative integer, got ${length}`);
    for (let l = 0; l < this.numLayers; l++) this.lengths[l] = Math.min(this.lengths[l], length);
  }

  /**
   * Makes room for `layer` to hold `length` positions and sets its length; returns its
   * buffers for the caller to fill the new positions. Used by ReferenceModel.forward.
   */
  extend(layer: number, length: number): { keys: Float32Array; values: Float32Array } {
    const needed = length * this.kvDim;
    if (this.keyData[layer].length < needed) {
      const capacity = Math.max(needed, this.keyData[layer].length * 2, 64 * this.kvDim);
      const used = this.lengths[layer] * this.kvDim;
      const keys = new Float32Array(capacity);
      const values = new Float32Array(capacity);
      keys.set(this.keyData[layer].subarray(0, used));
      values.set(this.valueData[layer].subarray(0, used));
      this.keyData[layer] = keys;
      this.valueData[layer] = values;
    }
    this.lengths[layer] = length;
    return { keys: this.keyData[layer], values: this.valueData[layer] };
  }

  private checkLayer(layer: number): number {
    if (!Number.isInteger(layer) || layer < 0 || layer >= this.numLayers)
      throw new InvalidArgumentError("layer", `${layer} is not a layer of a ${this.numLayers}-layer cache`);
    return layer;
  }
}
