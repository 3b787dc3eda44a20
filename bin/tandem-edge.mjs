#!/usr/bin/env node
// `tandem-edge`: the edge agent, serving tandem.v1.Inference on the device.
import { register } from "tsx/esm/api";

register();
const { main } = await import("../edge-agent/src/main.ts");
// Exit once main returns: peers that stopped reading must not keep a stopped server alive.
process.exit(await main(process.argv.slice(2)));
