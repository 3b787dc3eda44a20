/** `tandem bench NAME [--smoke] [args…]`: runs bench/NAME.bench.ts and prints its JSON result as the last line. */
import { existsSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import type { Benchmark } from "../../bench/bench-types.ts";
import { CliUsageError } from "../cli-errors.ts";

const BENCH_DIR = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "bench");

export function listBenchmarks(): string[] {
  return readdirSync(BENCH_DIR)
    .filter((f) => f.endsWith(".bench.ts"))
    .map((f) => f.slice(0, -".bench.ts".length))
    .sort();
}

export const benchCommand = {
  summary: "run a benchmark",
  async run(args: string[]): Promise<number> {
    const [name, ...rest] = args;
    if (!name || name === "--help") {
      console.log(`usage: tandem bench NAME [--smoke]\n\nbenchmarks: ${listBenchmarks().join(", ")}`);
      return name ? 0 : 2;
    }
    const file = join(BENCH_DIR, `${name}.bench.ts`);
    if (!/^[a-z0-9-]+$/.test(name) || !existsSync(file)) {
      throw new CliUsageError("NAME", `no benchmark "${name}"; available: ${listBenchmarks().join(", ")}`);
    }
    const benchmark = (await import(pathToFileURL(file).href)).default as Benchmark;
    const result = await benchmark({
      smoke: rest.includes("--smoke"),
      args: rest.filter((a) => a !== "--smoke"),
    });
    process.stdout.write(JSON.stringify(result) + "\n");
    return 0;
  },
};
