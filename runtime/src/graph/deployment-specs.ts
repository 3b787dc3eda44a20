/**
 * The segments Tandem's programs load, defined once: the edge agent's lower segment and
 * the cloud worker's upper segment. A graph built ahead of time (the batch worker's
 * build-graphs job) is then exactly the one the programs find in the graph cache.
 */
import { segmentSpec, type ExitHeadSpec, type SegmentSpec, type WeightFormat } from "./segment-spec.ts";

/** How a quantized format is laid out: block size, int4's head bits (defaults in SegmentSpec). */
export type QuantizationOptions = Pick<SegmentSpec, "quantBlockSize" | "int4HeadBits">;

/** Layers [0, split) with the exits; hidden states out for escalation, logits for sampling at an exit. */
export function edgeSegmentSpec(
  split: number,
  exits: ExitHeadSpec[],
  weightFormat: WeightFormat,
  quantization: QuantizationOptions = {},
): SegmentSpec {
  return segmentSpec({
    fromLayer: 0,
    toLayer: split,
    exits,
    outputHidden: true,
    logits: true,
    weightFormat,
    quantBlockSize: quantization.quantBlockSize,
    int4HeadBits: quantization.int4HeadBits,
  });
}

/**
 * Layers [split, numLayers) with the final head; logits let the worker sample, and the
 * head evaluates a tail of each frame of the frame's choosing, so the worker can check the
 * edge's tokens (verified decoding) in the run that extends its context.
 */
export function cloudSegmentSpec(
  split: number,
  numLayers: number,
  weightFormat: WeightFormat,
  quantization: QuantizationOptions = {},
): SegmentSpec {
  return segmentSpec({
    fromLayer: split,
    toLayer: numLayers,
    finalHead: true,
    logits: true,
    positions: "tail",
    weightFormat,
    quantBlockSize: quantization.quantBlockSize,
    int4HeadBits: quantization.int4HeadBits,
  });
}
