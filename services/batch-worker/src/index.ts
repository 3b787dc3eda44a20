/** @tandem/batch-worker: `tandem-batch-worker`, and the job kinds, data schemas and queues its clients share. */
export {
  BUILD_GRAPHS_JOB_SCHEMA,
  CALIBRATE_JOB_SCHEMA,
  GENERATE_JOB_SCHEMA,
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
export {
  BACKOFF_STRATEGY,
  DEFAULT_REDIS_URL,
  batchQueueLocation,
  type BatchQueueLocation,
} from "./batch-queues.ts";
export {
  DEFAULT_BATCH_WORKER_OPTIONS,
  batchBackoffStrategy,
  startBatchWorker,
  type BatchWorker,
  type BatchWorkerOptions,
} from "./batch-worker.ts";
export { showJob, submitJob, waitForJob, type JobView, type SubmitOptions } from "./job-queue-client.ts";
export { BATCH_CONFIG_SCHEMA, BATCH_ENV_PREFIX, type BatchConfig } from "./batch-config.ts";
export { BATCH_PROGRAM, main } from "./main.ts";
