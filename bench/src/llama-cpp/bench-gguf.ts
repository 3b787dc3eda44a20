/**
 * GGUF copies of the benchmarks' checkpoints, kept beside them in .cache/bench-models/gguf/
 * and written once: the llama.cpp cases of the runtime benchmark run these. A copy is named
 * by the checkpoint's weights hash and the writer's version, so llama.cpp never runs a copy
 * of other weights than Tandem's (a checkpoint written anew) or one an older writer made.
 */
import { existsSync } from "node:fs";
import { mkdir, rename } from "node:fs/promises";
import { basename, join } from "node:path";
import { loadCheckpoint } from "@tandem/runtime";
import { BENCH_MODELS_DIR } from "../bench-paths.ts";
import { GGUF_WRITER_VERSION, type GgufFileType, writeCheckpointGguf } from "./gguf-writer.ts";

export const BENCH_GGUF_DIR = join(BENCH_MODELS_DIR, "gguf");

/** The path of the GGUF of `checkpointDir` in `fileType`, written first when missing. */
export async function ensureCheckpointGguf(checkpointDir: string, fileType: GgufFileType): Promise<string> {
  const checkpoint = await loadCheckpoint(checkpointDir);
  const version = `${checkpoint.weightsHash.slice(0, 16)}-v${GGUF_WRITER_VERSION}`;
  const path = join(BENCH_GGUF_DIR, `${basename(checkpointDir)}-${version}-${fileType}.gguf`);
  if (!existsSync(path)) {
    await mkdir(BENCH_GGUF_DIR, { recursive: true });
    // Written under another name and renamed: an interrupted write never passes for a GGUF.
    const partial = `${path}.partial`;
    await writeCheckpointGguf(checkpoint, partial, { fileType });
    await rename(partial, path);
  }
  return path;
}
