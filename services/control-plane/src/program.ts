/**
 * What bin/tandem-control-plane.mjs runs. The build compiles it, with everything it imports,
 * into one file (dist/program.bundle.mjs), as it does each server program.
 */
export { main as run } from "./main.ts";
