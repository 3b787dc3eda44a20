/** @tandem/batch-worker: `tandem-batch-worker`, and the job kinds, data and queues its clients share. */
export {
  JOB_KINDS,
  isJobKind,
  validateJobData,
  type BuildGraphsJobData,
  type BuildGraphsJobResult,
  type CalibrateJobData,
  type CalibrateJobResult,
  type GenerateJobData,
  type GenerateJobResult,
  type JobDataByKind,
  type JobKind,
  type JobResultByKind,
} from "./batch-jobs.ts";
export { batchQueueLocation, type BatchQueueLocation } from "./batch-queues.ts";
export { startBatchWorker, type BatchWorker, type BatchWorkerOptions } from "./batch-worker.ts";
export { showJob, submitJob, waitForJob, type JobView, type SubmitOptions } from "./job-queue-client.ts";
export { BATCH_CONFIG_SCHEMA, main } from "./main.ts";
