/**
 * Loads a model split in two in one process: the lower segment [0, split) with its
 * exits and the upper segment [split, L) with the final head. Used by `tandem generate`,
 * the benchmarks and tests; the edge agent and cloud worker load one half each.
 */
import type { Checkpoint } from "../checkpoint/model-weights.ts";
import { SegmentModel, type SegmentModelOptions } from "../engine/segment-model.ts";
import { SegmentSessions } from "../engine/segment-sessions.ts";
import { InvalidArgumentError } from "@tandem/common";
import { cloudSegmentSpec, edgeSegmentSpec, type QuantizationOptions } from "../graph/deployment-specs.ts";
import {
  DEFAULT_WEIGHT_FORMAT,
  segmentSpec,
  type ExitHeadSpec,
  type WeightFormat,
} from "../graph/segment-spec.ts";

export interface LocalSplitOptions extends SegmentModelOptions, QuantizationOptions {
  /** Layers on the lower side; the whole model when equal to numLayers. @default numLayers */
  split?: number;
  /** Exits on the lower side (afterLayer ≤ split). @default none */
  exits?: ExitHeadSpec[];
  /** @default "fp32" */
  weightFormat?: WeightFormat;
}

export interface LocalSplit {
  lower: SegmentSessions;
  /** Undefined when the split is the whole model. */
  upper?: SegmentSessions;
  release(): Promise<void>;
}

export async function loadLocalSplit(
  checkpoint: Checkpoint,
  options: LocalSplitOptions = {},
): Promise<LocalSplit> {
  const layers = checkpoint.config.numLayers;
  const split = options.split ?? layers;
  if (!Number.isInteger(split) || split < 1 || split > layers) {
    throw new InvalidArgumentError("split", `must be an integer in [1, ${layers}], got ${split}`);
  }
  const weightFormat = options.weightFormat ?? DEFAULT_WEIGHT_FORMAT;
  const quantization: QuantizationOptions = {
    quantBlockSize: options.quantBlockSize,
    int4HeadBits: options.int4HeadBits,
  };
  const whole = split === layers;
  // The graphs the edge agent and the cloud worker load (with logits, so either side can
  // sample), or the whole model with its exits.
  const lowerModel = await SegmentModel.load(
    checkpoint,
    whole
      ? segmentSpec({
          fromLayer: 0,
          toLayer: layers,
          exits: options.exits ?? [],
          finalHead: true,
          logits: true,
          weightFormat,
          ...quantization,
        })
      : edgeSegmentSpec(split, options.exits ?? [], weightFormat, quantization),
    options,
  );
  const upperModel = whole
    ? undefined
    : await SegmentModel.load(
        checkpoint,
        cloudSegmentSpec(split, layers, weightFormat, quantization),
        options,
      );
  // Both graphs are built (each decoding only its tensors, the shared ones once): the
  // decoded fp32 weights can go.
  checkpoint.releaseWeights?.();
  return {
    lower: new SegmentSessions(lowerModel),
    upper: upperModel && new SegmentSessions(upperModel),
    async release() {
      await lowerModel.release();
      await upperModel?.release();
    },
  };
}
