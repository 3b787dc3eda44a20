#!/usr/bin/env node
// `tandem-cloud-worker`: the upper layers of a model behind the CloudWorker gRPC service.
// Runs the program's bundle (npm ci builds it; npm run build after editing the sources).
import { loadProgram } from "./load-program.mjs";

const { run } = await loadProgram("@tandem/cloud-worker/program");
// Exit once main returns: a peer that stopped reading (a frozen edge) must not keep a
// drained worker's process alive through its half-open HTTP/2 session.
process.exit(await run(process.argv.slice(2)));
