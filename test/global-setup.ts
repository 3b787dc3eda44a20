/**
 * Before any test: bring the compiled build (every package's dist/) up to date, because
 * tests start Tandem's programs as real processes and those run compiled JavaScript.
 * `tsc -b` is incremental: a build that is current costs a second or two.
 *
 * The run also gets a cache root of its own ($TANDEM_CACHE_DIR, inherited by the test
 * workers and every process they start), removed at the end: tests hash and build graphs
 * for checkpoints in temporary directories, which nothing would ever read again from the
 * user's ~/.cache/tandem.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";

export default function setup(): () => void {
  const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
  execFileSync(process.execPath, [tsc, "-b"], { cwd: join(import.meta.dirname, ".."), stdio: "inherit" });
  const cacheRoot = mkdtempSync(join(tmpdir(), "tandem-test-cache-"));
  process.env.TANDEM_CACHE_DIR = cacheRoot;
  return () => rmSync(cacheRoot, { recursive: true, force: true });
}
