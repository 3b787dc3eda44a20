/**
 * What every part of the collab benchmark shares: where the demo model, its calibrations
 * and held-out text live, the emulated link, and the Context one run passes to each part
 * (checkpoint, calibration of one split, and the held-out windows and prompts).
 */
import { join } from "node:path";
import { type Calibration, type Checkpoint, readDeployment, type Tokenizer } from "@tandem/runtime";
import { DEMO_MODEL, RESULTS_DIR } from "../bench-paths.ts";
import { freePort, type RunningProcess, startProgram } from "@tandem/testkit";
import { type EmulatedLink, type LinkOptions, startLinkEmulator } from "../link-emulator.ts";

/**
 * The calibrations the demo model ships (its tandem.json lists them per split), the
 * recommended split's first: it runs in smoke runs too.
 */
export function demoCalibrations(): string[] {
  const { calibrations, recommendedSplit } = readDeployment(DEMO_MODEL)!;
  const others = [...calibrations.keys()].filter((split) => split !== recommendedSplit).sort((a, b) => a - b);
  return [recommendedSplit, ...others].map((split) => calibrations.get(split)!);
}
export const PLOT = join(RESULTS_DIR, "collab.png");
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

/** A cloud-worker process on the demo model at `split`, reached through the emulated link. */
export async function cloudBehindLink(
  split: number,
  env: Record<string, string>,
): Promise<{ worker: RunningProcess; link: EmulatedLink; close(): Promise<void> }> {
  const port = await freePort();
  const worker = await startProgram(
    "tandem-cloud-worker",
    { model: DEMO_MODEL, split, port, workerId: "bench" },
    env,
  );
  const link = await startLinkEmulator({ host: "127.0.0.1", port }, LINK);
  return {
    worker,
    link,
    async close() {
      await link.close();
      await worker.kill();
    },
  };
}
