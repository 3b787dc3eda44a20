/**
 * Random checkpoints of real models' shapes (runtime/src/testing/real-model-configs.ts),
 * each stored as its model is published — BF16 safetensors (one file, or shards with an
 * index above 5 GB) with its config.json
 * — and written once into .cache/bench-models/scale-<name>/: the benchmarks that run
 * real shapes (`scale`, `runtime --models`) share them, a few GB each.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import {
  parameterCount,
  REAL_MODEL_CONFIGS,
  type RealModelName,
  realShapeSpec,
  writeRandomCheckpoint,
} from "@tandem/runtime/testing";
import { BENCH_MODELS_DIR } from "./bench-paths.ts";

const BF16_BYTES = 2;
/**
 * transformers' default `max_shard_size` (5 GB): models above it are published in shards
 * with an index (Qwen2.5-7B in 4, Mistral-7B-v0.3 in 3), smaller ones as one file.
 */
const MAX_SHARD_BYTES = 5e9;

export const isRealModelName = (name: string): name is RealModelName => name in REAL_MODEL_CONFIGS;

/** The directory of the real shape's checkpoint, written first when missing. */
export async function ensureRealShapeCheckpoint(
  name: RealModelName,
  log: (line: string) => void,
): Promise<string> {
  const dir = join(BENCH_MODELS_DIR, `scale-${name}`);
  if (!existsSync(join(dir, "config.json"))) {
    const spec = realShapeSpec(name, { dtype: "BF16" });
    const shards = Math.ceil((parameterCount(spec) * BF16_BYTES) / MAX_SHARD_BYTES);
    log(`writing the ${name} checkpoint (${shards === 1 ? "one BF16 file" : `${shards} BF16 shards`})`);
    await writeRandomCheckpoint(dir, { ...spec, shards });
  }
  return dir;
}
