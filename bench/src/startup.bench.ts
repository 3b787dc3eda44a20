/**
 * Benchmark `startup`: how long Tandem's programs take to be ready, as a supervisor sees
 * it — from spawning the process to SERVING on gRPC health for `tandem-edge` and
 * `tandem-cloud-worker` on the demo model (graph cache warm), and to exit for
 * `tandem --help`. `after` is this checkout as built (the servers' bundles and the CLI's
 * dist/: what the bins, the image and the systemd unit run); `before` is the same sources
 * compiled at start by tsx (how every program ran until it had a build) or, with
 * --before-checkout, another checkout's bins as they are, on the same model. Alternating, median of the runs.
 * Usage: tandem bench startup [--smoke] [--runs N] [--before-checkout DIR]
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execFile } from "node:child_process";
import { runCli, startProgram, type StartOptions, waitUntilServing } from "@tandem/testkit";
import { DEMO_MODEL } from "./bench-paths.ts";
import type { BenchOptions, BenchResult } from "./bench-types.ts";
import { median } from "./statistics.ts";

type Mode = "before" | "after";

/**
 * Spawns a server program and times it until it is ready: the line it prints once its
 * health service reports SERVING (polling health from here would steal one of the two
 * cores from the program being timed), then confirmed by a health check.
 */
async function timeServer(
  program: "tandem-edge" | "tandem-cloud-worker",
  flags: Record<string, string>,
  env: NodeJS.ProcessEnv,
  run: StartOptions,
): Promise<number> {
  const started = performance.now();
  const server = await startProgram(program, { ...flags, port: "0" }, env, run);
  const ms = performance.now() - started;
  try {
    await waitUntilServing(server.address, 5_000);
    return ms;
  } finally {
    await server.kill("SIGKILL");
  }
}

/** Times `tandem --help` to its exit. */
async function timeHelp(run: StartOptions): Promise<number> {
  const started = performance.now();
  const result = await runCli(["--help"], process.env, run);
  if (result.code !== 0) throw new Error(`tandem --help exited ${result.code}: ${result.stderr}`);
  return performance.now() - started;
}

async function timeBareNode(): Promise<number> {
  const started = performance.now();
  await new Promise((resolve) => execFile(process.execPath, ["-e", "0"], resolve));
  return performance.now() - started;
}

export default async function startupBenchmark(options: BenchOptions<"startup">): Promise<BenchResult> {
  const runs = options.options.runs ?? (options.smoke ? 1 : 5);
  const beforeCheckout = options.options.beforeCheckout;
  const runOf: Record<Mode, StartOptions> = {
    after: {},
    before: beforeCheckout
      ? { binDir: join(beforeCheckout, "bin") }
      : { nodeArgs: ["--conditions=development", "--import", "tsx"] },
  };
  const cache = mkdtempSync(join(tmpdir(), "tandem-startup-"));
  const env = { TANDEM_CACHE_DIR: cache };
  const cases: Record<string, (mode: Mode) => Promise<number>> = {
    // An edge configured with a cloud worker, as deployed (it connects on its first escalation).
    edge_start_ms: (mode) =>
      timeServer("tandem-edge", { model: DEMO_MODEL, cloudAddress: "127.0.0.1:50052" }, env, runOf[mode]),
    worker_start_ms: (mode) =>
      timeServer("tandem-cloud-worker", { model: DEMO_MODEL, split: "3" }, env, runOf[mode]),
    cli_help_ms: (mode) => timeHelp(runOf[mode]),
  };
  try {
    // Warm: the graph cache (built by the first start), tsx's transform cache, node's compile cache.
    for (const run of Object.values(cases)) for (const mode of ["after", "before"] as const) await run(mode);
    const result: Record<string, unknown> = {};
    for (const [name, run] of Object.entries(cases)) {
      const times: Record<Mode, number[]> = { before: [], after: [] };
      for (let i = 0; i < runs; i++) {
        // Alternate which goes first, so neither always runs on a machine the other just warmed.
        for (const mode of i % 2 === 0 ? (["after", "before"] as const) : (["before", "after"] as const))
          times[mode].push(await run(mode));
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
    for (let i = 0; i < runs; i++) bare.push(await timeBareNode());
    return {
      name: "startup",
      runs,
      // From Node 22.1 on, the bins keep a compile cache (warmed by the first start above).
      node: process.version,
      before: beforeCheckout ? `the bins of ${beforeCheckout}, as they run` : "this checkout through tsx",
      after: "this checkout as built: servers bundled, the CLI compiled",
      note: "spawn to ready (the line a server prints once its gRPC health reports SERVING, then confirmed) for the servers on the demo model with the graph cache warm, spawn to exit for --help; median",
      ...result,
      bare_node_ms: Math.round(median(bare)),
    };
  } finally {
    rmSync(cache, { recursive: true, force: true });
  }
}
