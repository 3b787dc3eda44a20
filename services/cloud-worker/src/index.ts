/** @tandem/cloud-worker: `tandem-cloud-worker`, the upper layers of a model behind the CloudWorker service. */
export { startCloudWorker, type CloudWorker, type CloudWorkerOptions } from "./cloud-worker.ts";
export {
  ContextManager,
  DEFAULT_CONTEXT_MANAGER_OPTIONS,
  type ContextManagerOptions,
  type ContextManagerStats,
} from "./context-manager.ts";
export {
  DecodeBatcher,
  DEFAULT_DECODE_BATCHER_OPTIONS,
  type DecodeBatcherOptions,
} from "./decode-batcher.ts";
export { DEFAULT_EXPERT_PARALLELISM_OPTIONS } from "./expert-parallelism.ts";
export { DEFAULT_SESSION_LIMITS, type SessionLimits, type WorkerCounters } from "./escalation-service.ts";
// Types only: a value export would load prom-client into every worker, metrics on or off.
export type { WorkerMetrics, WorkerMetricSources } from "./worker-metrics.ts";
export { WORKER_CONFIG_SCHEMA, WORKER_ENV_PREFIX, type WorkerConfig } from "./worker-config.ts";
export { WORKER_PROGRAM, main } from "./main.ts";
export { WORKER_SPANS } from "./worker-tracing.ts";
