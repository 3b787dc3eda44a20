/**
 * The benchmarks' own generated Llama checkpoints, by size (~1M, 25M and 110M
 * parameters), written into .cache on first use and kept between runs.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { sizedLlamaSpec, writeRandomCheckpoint } from "@tandem/runtime/testing";
import { BENCH_MODELS_DIR } from "./bench-paths.ts";

/** Parameters of each generated checkpoint, by its label. */
export const SIZED_MODELS: Record<string, number> = { "1M": 1e6, "25M": 25e6, "110M": 110e6 };

export function isSizedModelName(label: string): boolean {
  return label in SIZED_MODELS;
}

/** The checkpoint's directory, written first (seed 1) when missing. */
export async function ensureSizedModel(label: string, log: (line: string) => void): Promise<string> {
  const dir = join(BENCH_MODELS_DIR, label);
  if (!existsSync(join(dir, "config.json"))) {
    log(`writing ${label} checkpoint`);
    await writeRandomCheckpoint(dir, { ...sizedLlamaSpec(SIZED_MODELS[label]), seed: 1 });
  }
  return dir;
}
