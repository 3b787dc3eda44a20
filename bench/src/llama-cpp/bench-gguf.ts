/**
 * GGUF copies of the benchmarks' checkpoints, kept beside them in .cache/bench-models/gguf/
 * and written once: the llama.cpp cases of the runtime benchmark run these.
 */
import { existsSync } from "node:fs";
import { mkdir, rename } from "node:fs/promises";
import { basename, join } from "node:path";
import { loadCheckpoint } from "@tandem/runtime";
import { BENCH_MODELS_DIR } from "../bench-paths.ts";
import { type GgufFileType, writeCheckpointGguf } from "./gguf-writer.ts";

export const BENCH_GGUF_DIR = join(BENCH_MODELS_DIR, "gguf");

/** The path of the GGUF of `checkpointDir` in `fileType`, written first when missing. */
export async function ensureCheckpointGguf(
  checkpointDir: string,
  fileType: GgufFileType,
  options: { pure?: boolean } = {},
): Promise<string> {
  const name = `${basename(checkpointDir)}-${fileType}${options.pure ? "-pure" : ""}.gguf`;
  const path = join(BENCH_GGUF_DIR, name);
  if (!existsSync(path)) {
    await mkdir(BENCH_GGUF_DIR, { recursive: true });
    // Written under another name and renamed: an interrupted write never passes for a GGUF.
    const partial = `${path}.partial`;
    await writeCheckpointGguf(await loadCheckpoint(checkpointDir), partial, { fileType, pure: options.pure });
    await rename(partial, path);
  }
  return path;
}
