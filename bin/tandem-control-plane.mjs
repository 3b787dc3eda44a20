#!/usr/bin/env node
// `tandem-control-plane`: a control-plane replica (membership, leader lease, placement) on NATS.
import { register } from "tsx/esm/api";

register();
const { main } = await import("../services/control-plane/src/main.ts");
// Exit once main returns: peers that stopped reading must not keep a stopped server alive.
process.exit(await main(process.argv.slice(2)));
