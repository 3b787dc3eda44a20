#!/usr/bin/env node
// The `tandem` command.
// Runs the compiled program (npm ci builds it; npm run build after editing the sources).
import { loadProgram } from "./load-program.mjs";

const { main } = await loadProgram("@tandem/cli");
process.exitCode = await main(process.argv.slice(2));
