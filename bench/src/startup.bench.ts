/**
 * Benchmark `startup`: how long Tandem's programs take to be ready, as a supervisor sees
 * it — from spawning the process to SERVING on gRPC health for `tandem-edge` and
 * `tandem-cloud-worker` on the demo model (graph cache warm), and to exit for
 * `tandem --help`. Each is timed compiled (`after`: node running dist/, what the bins,
 * the image and the systemd unit run) and with the TypeScript compiled at start by tsx
 * (`before`: how every program ran until it had a build), alternating, median of the runs.
 * Usage: tandem bench startup [--smoke] [--runs N]
 */
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { freePort, waitUntilServing } from "@tandem/testkit";
import type { BenchOptions, BenchResult } from "./bench-types.ts";
import { median } from "./statistics.ts";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const BIN = join(ROOT, "bin");
const MODEL = join(ROOT, "models", "tandem-demo");

type Mode = "before" | "after";
/** How node runs a bin: compiled, or from the sources through tsx. */
const NODE_ARGS: Record<Mode, string[]> = {
  after: [],
  before: ["--conditions=development", "--import", "tsx"],
};

interface Timed {
  ms: number;
}

/**
 * Spawns a server program and times it until it is ready: the line it prints once its
 * health service reports SERVING (polling health from here would steal one of the two
 * cores from the program being timed), then confirmed by a health check.
 */
async function timeServer(
  mode: Mode,
  program: string,
  flags: string[],
  env: NodeJS.ProcessEnv,
): Promise<Timed> {
  const port = await freePort();
  const started = performance.now();
  const child = spawn(
    process.execPath,
    [...NODE_ARGS[mode], join(BIN, `${program}.mjs`), ...flags, "--port", String(port)],
    { env: { ...process.env, ...env, TANDEM_LOG_LEVEL: "warn" }, stdio: ["ignore", "pipe", "pipe"] },
  );
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  try {
    const ms = await new Promise<number>((resolve, reject) => {
      child.stdout!.on("data", (d: Buffer) => {
        if (/^listening /m.test(d.toString())) resolve(performance.now() - started);
      });
      child.once("exit", (code) => reject(new Error(`${program} exited with ${code}: ${stderr}`)));
    });
    await waitUntilServing(`127.0.0.1:${port}`, 5_000);
    return { ms };
  } finally {
    child.removeAllListeners("exit");
    const gone = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGKILL");
    await gone;
  }
}

/** Times a command to its exit. */
async function timeCommand(mode: Mode, args: string[]): Promise<Timed> {
  const started = performance.now();
  await new Promise<void>((resolve, reject) => {
    const child = spawn(process.execPath, [...NODE_ARGS[mode], join(BIN, "tandem.mjs"), ...args], {
      stdio: "ignore",
    });
    child.once("exit", (code) =>
      code === 0 ? resolve() : reject(new Error(`tandem ${args.join(" ")} exited ${code}`)),
    );
  });
  return { ms: performance.now() - started };
}

async function timeBareNode(): Promise<Timed> {
  const started = performance.now();
  await new Promise((resolve) =>
    spawn(process.execPath, ["-e", "0"], { stdio: "ignore" }).once("exit", resolve),
  );
  return { ms: performance.now() - started };
}

export default async function startupBenchmark(options: BenchOptions<"startup">): Promise<BenchResult> {
  const runs = options.options.runs ?? (options.smoke ? 1 : 5);
  const cache = mkdtempSync(join(tmpdir(), "tandem-startup-"));
  const env = { TANDEM_CACHE_DIR: cache };
  // An edge configured with a cloud worker, as deployed (it connects on its first escalation).
  const edgeFlags = ["--model", MODEL, "--cloudAddress", "127.0.0.1:50052"];
  const workerFlags = ["--model", MODEL, "--split", "3"];
  const cases: Record<string, (mode: Mode) => Promise<Timed>> = {
    edge_start_ms: (mode) => timeServer(mode, "tandem-edge", edgeFlags, env),
    worker_start_ms: (mode) => timeServer(mode, "tandem-cloud-worker", workerFlags, env),
    cli_help_ms: (mode) => timeCommand(mode, ["--help"]),
  };
  try {
    // Warm: the graph cache (built by the first start) and tsx's transform cache.
    for (const run of Object.values(cases)) for (const mode of ["after", "before"] as const) await run(mode);
    const result: Record<string, unknown> = {};
    for (const [name, run] of Object.entries(cases)) {
      const times: Record<Mode, number[]> = { before: [], after: [] };
      for (let i = 0; i < runs; i++) {
        // Alternate which goes first, so neither always runs on a machine the other just warmed.
        for (const mode of i % 2 === 0 ? (["after", "before"] as const) : (["before", "after"] as const))
          times[mode].push((await run(mode)).ms);
      }
      const before = median(times.before);
      const after = median(times.after);
      result[name] = {
        before: Math.round(before),
        after: Math.round(after),
        speedup: Number((before / after).toFixed(2)),
      };
      process.stderr.write(`startup bench: ${name} ${JSON.stringify(result[name])}\n`);
    }
    const bare: number[] = [];
    for (let i = 0; i < runs; i++) bare.push((await timeBareNode()).ms);
    return {
      name: "startup",
      runs,
      // From Node 22.1 on, the bins keep a compile cache (warmed by the first start above).
      node: process.version,
      note: "spawn to ready (the line a server prints once its gRPC health reports SERVING, then confirmed) for the servers on the demo model with the graph cache warm, spawn to exit for --help; median",
      ...result,
      bare_node_ms: Math.round(median(bare)),
    };
  } finally {
    rmSync(cache, { recursive: true, force: true });
  }
}
