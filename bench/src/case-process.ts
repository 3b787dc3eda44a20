/**
 * One case of a benchmark in a child process of its own (`tandem bench NAME --case JSON`),
 * so its RSS and thread pools are its own, in the deployed environment: the image and
 * the edge's systemd unit set HUGE_PAGES_ENV, so a figure measured without it would not be
 * what a deployment gets (for llama.cpp beside Tandem too: its malloc'd buffers take huge
 * pages as well). Any tunables already set are kept.
 */
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { HUGE_PAGES_ENV } from "@tandem/runtime";
import { REPO_ROOT } from "./bench-paths.ts";

function deployedEnvironment(): NodeJS.ProcessEnv {
  const { name, value } = HUGE_PAGES_ENV;
  const tunables = process.env[name];
  return { ...process.env, [name]: tunables ? `${tunables}:${value}` : value };
}

/** Runs `c` as a case of benchmark `bench`; the result is the last line the child prints. */
export async function runCaseProcess(bench: string, c: unknown, maxBufferBytes: number): Promise<unknown> {
  const { stdout } = await promisify(execFile)(
    process.execPath,
    [join(REPO_ROOT, "bin", "tandem.mjs"), "bench", bench, "--case", JSON.stringify(c)],
    { maxBuffer: maxBufferBytes, env: deployedEnvironment() },
  );
  const lines = stdout.trim().split("\n");
  return JSON.parse(lines[lines.length - 1]);
}
