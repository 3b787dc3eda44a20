#!/usr/bin/env node
// `tandem-batch-worker`: takes batch jobs (generation, calibration, graph builds) from BullMQ queues on Redis.
import { register } from "tsx/esm/api";

register();
const { main } = await import("../services/batch-worker/src/main.ts");
// Exit once main returns: an idle Redis connection must not keep a stopped worker alive.
process.exit(await main(process.argv.slice(2)));
