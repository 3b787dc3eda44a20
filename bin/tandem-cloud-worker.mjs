#!/usr/bin/env node
// `tandem-cloud-worker`: the upper layers of a model behind the CloudWorker gRPC service.
import { register } from "tsx/esm/api";

register();
const { main } = await import("../services/cloud-worker/src/main.ts");
process.exitCode = await main(process.argv.slice(2));
