/**
 * What bin/tandem-edge.mjs runs. The build compiles it, with everything it imports, into
 * one file (dist/program.bundle.mjs): a device starts the agent from one module instead of
 * resolving and reading some five hundred.
 */
import { startTracingIfAsked } from "@tandem/common";
import { main } from "./main.ts";

export async function run(argv: string[]): Promise<number> {
  await startTracingIfAsked("tandem-edge");
  return main(argv);
}
