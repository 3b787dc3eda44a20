/**
 * What every part of the collab benchmark shares: where the demo model, its calibrations
 * and held-out text live, the emulated link, and the Context one run passes to each part
 * (checkpoint, calibration of one split, and the held-out windows and prompts).
 */
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Calibration, Checkpoint, Tokenizer } from "@tandem/runtime";
import type { LinkOptions } from "../link-emulator.ts";

/** The repository root (this file sits in bench/src/collab, or bench/dist/collab once compiled). */
export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
export const MODEL = join(ROOT, "models", "tandem-demo");
/** Shipped calibrations: the default split (edge runs 3 of 6 layers) and a deeper one (5 of 6). */
export const CALIBRATIONS = [
  join(MODEL, "calibration.safetensors"),
  join(MODEL, "calibration-split5.safetensors"),
];
export const HELDOUT = join(MODEL, "heldout.txt");
export const PLOT = join(ROOT, "bench", "results", "collab.png");
export const LINK: LinkOptions = { oneWayDelayMs: 20, rateMbit: 50 };

/** What each part measures on: the model, one split's calibration, held-out windows and prompts. */
export interface Context {
  checkpoint: Checkpoint;
  calibration: Calibration;
  calibrationPath: string;
  tokenizer: Tokenizer;
  split: number;
  windows: number[][];
  prompts: number[][];
  smoke: boolean;
}
