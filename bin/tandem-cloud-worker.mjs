#!/usr/bin/env node
// `tandem-cloud-worker`: the upper layers of a model behind the CloudWorker gRPC service.
import { register } from "tsx/esm/api";

register();
const { main } = await import("../services/cloud-worker/src/main.ts");
// Exit once main returns: a peer that stopped reading (a frozen edge) must not keep a
// drained worker's process alive through its half-open HTTP/2 session.
process.exit(await main(process.argv.slice(2)));
