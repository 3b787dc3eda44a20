/**
 * A checkpoint's small JSON files (generation_config.json, tokenizer.json,
 * tokenizer_config.json): read whole, each failure a CheckpointError naming the file.
 */
import { readFile } from "node:fs/promises";
import { CheckpointError } from "@tandem/common";

/** The JSON object in `path`; a file that cannot be read, is not JSON or not an object throws CheckpointError. */
export async function readJsonObject(path: string): Promise<Record<string, unknown>> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, "utf8"));
  } catch (error) {
    throw new CheckpointError(path, `cannot be read as JSON (${(error as Error).message})`, { cause: error });
  }
  if (typeof json !== "object" || json === null || Array.isArray(json))
    throw new CheckpointError(path, "is not a JSON object");
  return json as Record<string, unknown>;
}
