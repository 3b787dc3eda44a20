/**
 * The weights hash identifies a checkpoint's exact weights: calibration files and the
 * graph cache are keyed by it, and an edge and a worker must agree on it. Its recipe
 * never changes: sha256 over config.json's bytes, then every weight file's bytes in path
 * order. generation_config.json is left out on purpose: its end tokens decide where the
 * edge stops a generation, not what either side computes.
 *
 * Hashing reads every byte — seconds for a checkpoint of a few GB, at every start — so
 * the result is kept under the cache root, keyed by what identifies each file's content
 * on this machine without reading it: path, device, inode, size and modification time in
 * nanoseconds (what git's index trusts). Rewriting a file changes its key; a cache that
 * cannot be written only costs the next start a rehash.
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, readFile, rename, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { cacheRoot } from "../cache-root.ts";

/** @param weightFiles every weight file of the checkpoint, in path order */
export async function weightsHash(
  configBytes: Buffer,
  weightFiles: string[],
  cacheDir = join(cacheRoot(), "weights-hashes"),
): Promise<string> {
  const identity = createHash("sha256").update(configBytes);
  for (const file of weightFiles) {
    const s = await stat(file, { bigint: true });
    identity.update(`\n${file}\0${s.dev}\0${s.ino}\0${s.size}\0${s.mtimeNs}`);
  }
  const cached = join(cacheDir, identity.digest("hex"));
  const known = await readFile(cached, "utf8").catch(() => undefined);
  if (known && /^[0-9a-f]{64}$/.test(known)) return known;

  const hash = createHash("sha256").update(configBytes);
  for (const file of weightFiles)
    for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  const digest = hash.digest("hex");
  try {
    await mkdir(cacheDir, { recursive: true });
    const temporary = `${cached}.tmp-${process.pid}`;
    await writeFile(temporary, digest);
    await rename(temporary, cached);
  } catch {
    // A read-only cache: the next start hashes again, nothing else changes.
  }
  return digest;
}
