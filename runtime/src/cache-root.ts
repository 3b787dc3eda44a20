/**
 * Where Tandem keeps what it derives from checkpoints (built segment graphs, weights
 * hashes): $TANDEM_CACHE_DIR, else ~/.cache/tandem. Everything under it can be deleted;
 * it is rebuilt on demand.
 */
import { homedir } from "node:os";
import { join } from "node:path";

export function cacheRoot(): string {
  return process.env.TANDEM_CACHE_DIR ?? join(homedir(), ".cache", "tandem");
}
