/**
 * A model's `tandem.json`: how Tandem deploys it when nothing else is said — the exit
 * layers it was trained with, the split to run by default, the calibration files shipped
 * per split, and the file of its exit adapters (exit-adapters.ts). Optional; a malformed
 * one is a CheckpointError naming the field.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";
import { CheckpointError, parseOrThrow, type InvalidArgumentError } from "@tandem/common";

export const DEPLOYMENT_FILE = "tandem.json";

/** A file beside tandem.json: a path could point anywhere on the machine. */
const FILE_NAME = z.string().regex(/^(?!\.\.?$)[^/\\]+$/);

const DEPLOYMENT_SCHEMA = z.object({
  exit_layers: z.array(z.int().min(1)).min(1),
  recommended_split: z.int().min(1),
  /** split → calibration file, relative to the model directory. */
  calibrations: z.record(z.string().regex(/^\d+$/), FILE_NAME).optional(),
  /** The exit adapters' safetensors file, relative to the model directory. */
  exit_adapters: FILE_NAME.optional(),
});

export interface Deployment {
  exitLayers: number[];
  recommendedSplit: number;
  /** split → absolute path of its calibration file. */
  calibrations: Map<number, string>;
  /** Absolute path of the exit adapters' file, when the model has them. */
  exitAdaptersPath?: string;
}

/** The model directory's tandem.json, or undefined when it has none. */
export function readDeployment(modelDir: string): Deployment | undefined {
  const path = join(modelDir, DEPLOYMENT_FILE);
  if (!existsSync(path)) return undefined;
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, "utf8"));
  } catch (error) {
    throw new CheckpointError(path, `is not valid JSON (${(error as Error).message})`, { cause: error });
  }
  let parsed: z.output<typeof DEPLOYMENT_SCHEMA>;
  try {
    parsed = parseOrThrow(DEPLOYMENT_SCHEMA, json);
  } catch (error) {
    throw new CheckpointError(path, (error as InvalidArgumentError).message, { cause: error });
  }
  return {
    exitLayers: parsed.exit_layers,
    recommendedSplit: parsed.recommended_split,
    calibrations: new Map(
      Object.entries(parsed.calibrations ?? {}).map(([split, file]) => [Number(split), join(modelDir, file)]),
    ),
    exitAdaptersPath: parsed.exit_adapters === undefined ? undefined : join(modelDir, parsed.exit_adapters),
  };
}
