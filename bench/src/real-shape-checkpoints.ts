/**
 * Random checkpoints of real models' shapes (runtime/src/testing/real-model-configs.ts),
 * each stored as its model is published — one BF16 model.safetensors with its config.json
 * — and written once into .cache/bench-models/scale-<name>/: the benchmarks that run
 * real shapes (`scale`, `runtime --models`) share them, a few GB each.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import {
  REAL_MODEL_CONFIGS,
  type RealModelName,
  realShapeSpec,
  writeRandomCheckpoint,
} from "@tandem/runtime/testing";
import { BENCH_MODELS_DIR } from "./bench-paths.ts";

export const isRealModelName = (name: string): name is RealModelName => name in REAL_MODEL_CONFIGS;

/** The directory of the real shape's checkpoint, written first when missing. */
export async function ensureRealShapeCheckpoint(
  name: RealModelName,
  log: (line: string) => void,
): Promise<string> {
  const dir = join(BENCH_MODELS_DIR, `scale-${name}`);
  if (!existsSync(join(dir, "config.json"))) {
    log(`writing the ${name} checkpoint (one BF16 file)`);
    await writeRandomCheckpoint(dir, realShapeSpec(name, { dtype: "BF16" }));
  }
  return dir;
}
