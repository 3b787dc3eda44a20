/** @tandem/cloud-worker: `tandem-cloud-worker`, the upper layers of a model behind the CloudWorker service. */
export { startCloudWorker, type CloudWorker, type CloudWorkerOptions } from "./cloud-worker.ts";
export { ContextManager, type ContextManagerOptions, type ContextManagerStats } from "./context-manager.ts";
export { DecodeBatcher, type DecodeBatcherOptions } from "./decode-batcher.ts";
export { WORKER_CONFIG_SCHEMA, main } from "./main.ts";
