/** @tandem/batch-worker: `tandem-batch-worker`, and the job kinds, data schemas and queues its clients share. */
export {
  JOB_KINDS,
  JOB_SCHEMAS,
  isJobKind,
  validateJobData,
  type BuildGraphsJobData,
  type BuildGraphsJobResult,
  type CalibrateJobData,
  type CalibrateJobResult,
  type GenerateJobData,
  type GenerateJobResult,
  type JobDataByKind,
  type JobInputByKind,
  type JobKind,
  type JobResultByKind,
} from "./batch-jobs.ts";
export { DEFAULT_REDIS_URL, batchQueueLocation, type RedisSecrets } from "./batch-queues.ts";
export {
  DEFAULT_BATCH_WORKER_OPTIONS,
  batchWorkerOptions,
  startBatchWorker,
  type BatchWorker,
  type BatchWorkerOptions,
} from "./batch-worker.ts";
export {
  showJob,
  submitJob,
  waitForJob,
  type JobOutcome,
  type JobView,
  type SubmitOptions,
} from "./job-queue-client.ts";
export { BATCH_CONFIG_SCHEMA, BATCH_ENV_PREFIX } from "./batch-config.ts";
export { BATCH_PROGRAM, main } from "./main.ts";
// A type only: a value export would load prom-client into every batch worker.
export type { BatchMetrics } from "./batch-metrics.ts";
