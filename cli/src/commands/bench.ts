/**
 * `tandem bench NAME [--smoke] [the benchmark's options]`: runs a benchmark of
 * @tandem/bench and prints its JSON result as the last line. The options accepted are
 * the named benchmark's own (bench-options.ts) plus --smoke.
 */
import { z } from "zod";
import { UsageError } from "@tandem/common";
import { BENCHMARKS, BENCH_OPTION_SCHEMAS, isBenchName } from "@tandem/bench";
import type { CommandDefinition } from "../command.ts";

const SMOKE = z.object({
  smoke: z
    .boolean()
    .default(false)
    .meta({ description: "a tiny run (what the tests run): same code, smallest sizes" }),
});

const listing = () =>
  Object.entries(BENCHMARKS)
    .map(([name, b]) => `  ${name.padEnd(11)} ${b.summary}`)
    .join("\n");

/** The command for `tandem bench <args[0]>`: its options are that benchmark's. */
export function benchCommandFor(name: string | undefined): CommandDefinition {
  const options =
    name && isBenchName(name) ? SMOKE.extend(BENCH_OPTION_SCHEMAS[name].shape).strict() : SMOKE.strict();
  return {
    name: "bench",
    summary: "run a benchmark and print its JSON result last",
    description: `Runs a benchmark; its JSON result is the last line of stdout, progress goes to stderr.\n\nbenchmarks:\n${listing()}`,
    options,
    positionals: [{ name: "NAME", description: `one of ${Object.keys(BENCHMARKS).join(", ")}` }],
    async run(values, [benchName]) {
      if (!isBenchName(benchName))
        throw new UsageError(
          "NAME",
          `no benchmark "${benchName}"; available: ${Object.keys(BENCHMARKS).join(", ")}`,
        );
      const { smoke, ...own } = values as { smoke: boolean } & Record<string, unknown>;
      const benchmark = await BENCHMARKS[benchName].load();
      const result = await (benchmark as (o: { smoke: boolean; options: unknown }) => Promise<unknown>)({
        smoke,
        options: own,
      });
      process.stdout.write(JSON.stringify(result) + "\n");
      return 0;
    },
  };
}
