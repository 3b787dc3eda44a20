#!/usr/bin/env node
// `tandem-control-plane`: a control-plane replica (membership, leader lease, placement) on NATS.
// Runs the program's bundle (npm ci builds it; npm run build after editing the sources).
import { loadProgram } from "./load-program.mjs";

const { run } = await loadProgram("@tandem/control-plane/program");
// Exit once main returns: peers that stopped reading must not keep a stopped server alive.
process.exit(await run(process.argv.slice(2)));
