#!/usr/bin/env node
// `tandem-edge`: the edge agent, serving tandem.v1.Inference on the device.
// Runs the compiled program (npm ci builds it; npm run build after editing the sources).
import { loadProgram } from "./load-program.mjs";

const { main } = await loadProgram("@tandem/edge-agent");
// Exit once main returns: peers that stopped reading must not keep a stopped server alive.
process.exit(await main(process.argv.slice(2)));
