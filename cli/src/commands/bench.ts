/** `tandem bench NAME [--smoke] [args…]`: runs a benchmark of @tandem/bench and prints its JSON result as the last line. */
import { BENCHMARKS } from "@tandem/bench";
import { UsageError } from "@tandem/common";

export function listBenchmarks(): string[] {
  return Object.keys(BENCHMARKS).sort();
}

export const benchCommand = {
  summary: "run a benchmark",
  async run(args: string[]): Promise<number> {
    const [name, ...rest] = args;
    if (!name || name === "--help") {
      console.log(`usage: tandem bench NAME [--smoke]\n\nbenchmarks: ${listBenchmarks().join(", ")}`);
      return name ? 0 : 2;
    }
    const load = Object.hasOwn(BENCHMARKS, name) ? BENCHMARKS[name] : undefined;
    if (!load)
      throw new UsageError("NAME", `no benchmark "${name}"; available: ${listBenchmarks().join(", ")}`);
    const benchmark = await load();
    const result = await benchmark({
      smoke: rest.includes("--smoke"),
      args: rest.filter((a) => a !== "--smoke"),
    });
    process.stdout.write(JSON.stringify(result) + "\n");
    return 0;
  },
};
