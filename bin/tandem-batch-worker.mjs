#!/usr/bin/env node
// `tandem-batch-worker`: takes batch jobs (generation, calibration, graph builds) from BullMQ queues on Redis.
// Runs the program's bundle (npm ci builds it; npm run build after editing the sources).
import { loadProgram } from "./load-program.mjs";

const { run } = await loadProgram("@tandem/batch-worker/program");
// Exit once main returns: an idle Redis connection must not keep a stopped worker alive.
process.exit(await run(process.argv.slice(2)));
