/**
 * Settings that several programs and commands take (the edge agent, the cloud worker,
 * batch jobs, `tandem generate`…), each defined once with its default, bounds and
 * description: schemas are built from these, so a default cannot differ between them.
 */
import { z } from "zod";
import { DEFAULT_AGREEMENT_TARGET } from "./calibration/calibration-file.ts";
import { DEFAULT_SEGMENT_MODEL_OPTIONS } from "./engine/segment-model.ts";
import { DEFAULT_GENERATE_OPTIONS } from "./generation/split-generator.ts";
import {
  DEFAULT_QUANT_BLOCK_SIZE,
  INT4_HEAD_BITS,
  DEFAULT_WEIGHT_FORMAT,
  QUANT_BLOCK_SIZES,
  WEIGHT_FORMATS,
} from "./graph/segment-spec.ts";

export const RUNTIME_SETTINGS = {
  threads: z
    .int()
    .min(1)
    .default(DEFAULT_SEGMENT_MODEL_OPTIONS.threads)
    .meta({ description: "ONNX Runtime threads" }),
  weights: z.enum(WEIGHT_FORMATS).default(DEFAULT_WEIGHT_FORMAT).meta({ description: "weight format" }),
  quantBlockSize: z
    .int()
    .min(QUANT_BLOCK_SIZES[0])
    .max(QUANT_BLOCK_SIZES[QUANT_BLOCK_SIZES.length - 1])
    .refine((n) => (QUANT_BLOCK_SIZES as readonly number[]).includes(n), {
      message: `must be one of ${QUANT_BLOCK_SIZES.join(", ")} (MatMulNBits' block sizes)`,
    })
    .default(DEFAULT_QUANT_BLOCK_SIZE)
    .meta({
      description: `values per quantization block of int8 and int4 weights (w8a8: of its LM head), one of ${QUANT_BLOCK_SIZES.join(", ")}: larger blocks run faster and agree less (README: the \`runtime\` benchmark)`,
    }),
  int4HeadBits: z.literal(INT4_HEAD_BITS).optional().meta({
    description:
      "bits of the LM head of int4 weights, 4 or 8 (default: 8 where the segment has the model's final head, as llama-quantize keeps a Q4_0 file's head; 4 where only exits read it, evaluated once per exit per token)",
  }),
  target: z.number().gt(0).max(1).default(DEFAULT_AGREEMENT_TARGET).meta({
    description:
      "agreement target whose calibrated thresholds to use: those of the nearest target the calibration holds at or above it (its strictest when none is)",
  }),
  maxTokens: z
    .int()
    .min(1)
    .max(4096)
    .default(DEFAULT_GENERATE_OPTIONS.maxTokens)
    .meta({ description: "tokens to generate" }),
} as const;
