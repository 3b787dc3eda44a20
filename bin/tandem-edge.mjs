#!/usr/bin/env node
// `tandem-edge`: the edge agent, serving tandem.v1.Inference on the device.
// Runs the program's bundle (npm ci builds it; npm run build after editing the sources).
import { loadProgram } from "./load-program.mjs";

const { run } = await loadProgram("@tandem/edge-agent/program");
// Exit once main returns: peers that stopped reading must not keep a stopped server alive.
process.exit(await run(process.argv.slice(2)));
