#!/usr/bin/env node
// `tandem-control-plane`: a control-plane replica (membership, leader lease, placement) on NATS.
// Runs the compiled program (npm ci builds it; npm run build after editing the sources).
import { loadProgram } from "./load-program.mjs";

const { main } = await loadProgram("@tandem/control-plane");
// Exit once main returns: peers that stopped reading must not keep a stopped server alive.
process.exit(await main(process.argv.slice(2)));
