/**
 * What bin/tandem-cloud-worker.mjs runs. The build compiles it, with everything it
 * imports, into one file (dist/program.bundle.mjs): a worker starts from one module
 * instead of resolving and reading some five hundred.
 */
import { startTracingIfAsked } from "@tandem/common";
import { main } from "./main.ts";

export async function run(argv: string[]): Promise<number> {
  await startTracingIfAsked("tandem-cloud-worker");
  return main(argv);
}
