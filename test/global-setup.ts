/**
 * Before any test: bring the build (every package's dist/, and the server programs'
 * bundles) up to date, because tests start Tandem's programs as real processes and those
 * run what the build made — the bundles, as a deployment does. `tsc -b` is incremental:
 * a build that is current costs a second or two, and bundling two more.
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
  const root = join(import.meta.dirname, "..");
  const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
  execFileSync(process.execPath, [tsc, "-b"], { cwd: root, stdio: "inherit" });
  execFileSync(process.execPath, [join(root, "scripts", "bundle-programs.mjs")], {
    cwd: root,
    stdio: "inherit",
  });
  const cacheRoot = mkdtempSync(join(tmpdir(), "tandem-test-cache-"));
  process.env.TANDEM_CACHE_DIR = cacheRoot;
  return () => rmSync(cacheRoot, { recursive: true, force: true });
}
