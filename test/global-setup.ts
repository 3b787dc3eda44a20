/**
 * Before any test: bring the compiled build (every package's dist/) up to date, because
 * tests start Tandem's programs as real processes and those run compiled JavaScript.
 * `tsc -b` is incremental: a build that is current costs a second or two.
 */
import { execFileSync } from "node:child_process";
import { createRequire } from "node:module";
import { join } from "node:path";

export default function buildOnce(): void {
  const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
  execFileSync(process.execPath, [tsc, "-b"], { cwd: join(import.meta.dirname, ".."), stdio: "inherit" });
}
