/**
 * The batch worker: one BullMQ worker per job kind on the cluster's queues. A job whose
 * data or files are bad fails at once, unretried, with the runtime's message naming the
 * field or file; anything else (a crash, a lost lock) is retried by BullMQ: a worker that
 * dies mid-job leaves the job stalled, and another worker (or this one, restarted) takes
 * it again. Closing waits for the jobs in progress.
 */
import { UnrecoverableError, Worker, type Job } from "bullmq";
import { RuntimeError } from "@tandem/common";
import {
  JOB_KINDS,
  validateJobData,
  type JobDataByKind,
  type JobKind,
  type JobResultByKind,
} from "./batch-jobs.ts";
import { batchQueueLocation } from "./batch-queues.ts";
import type { Logger } from "@tandem/common";
import { runBuildGraphsJob, runCalibrateJob, runGenerateJob, type JobContext } from "./job-handlers.ts";

export interface BatchWorkerOptions {
  redisUrl: string;
  cluster: string;
  /** Job kinds to take. @default all */
  kinds?: JobKind[];
  /** Jobs of each kind run at once. @default 1 */
  concurrency?: number;
  /** How long a job's lock lasts without renewal; a dead worker's job stalls after it. @default 30000 */
  lockDurationMs?: number;
  /** How often stalled jobs are looked for. @default 30000 */
  stalledIntervalMs?: number;
  /** ONNX Runtime threads per job. @default 1 */
  threads?: number;
  cacheDir?: string;
}

export interface BatchWorker {
  /** Jobs finished by this process, per outcome (for logs and tests). */
  readonly counts: { completed: number; failed: number };
  close(): Promise<void>;
}

/** Runtime errors that no retry can fix: the data or the files are wrong. */
const PERMANENT_CODES = new Set([
  "INVALID_ARGUMENT",
  "CHECKPOINT_INVALID",
  "CONFIG_INVALID",
  "TENSOR_MISSING",
  "TENSOR_MISMATCH",
  "UNSUPPORTED",
]);

type Handler<K extends JobKind> = (
  data: JobDataByKind[K],
  context: JobContext,
) => Promise<JobResultByKind[K]>;
const HANDLERS: { [K in JobKind]: Handler<K> } = {
  generate: runGenerateJob,
  calibrate: runCalibrateJob,
  "build-graphs": runBuildGraphsJob,
};

export async function startBatchWorker(options: BatchWorkerOptions, log: Logger): Promise<BatchWorker> {
  const location = batchQueueLocation(options.redisUrl, options.cluster);
  const counts = { completed: 0, failed: 0 };
  const workers = (options.kinds ?? [...JOB_KINDS]).map((kind) => {
    const worker = new Worker(kind, (job: Job) => processJob(kind, job, options), {
      connection: location.connection,
      prefix: location.prefix,
      concurrency: options.concurrency ?? 1,
      lockDuration: options.lockDurationMs ?? 30_000,
      stalledInterval: options.stalledIntervalMs ?? 30_000,
    });
    worker.on("completed", (job) => {
      counts.completed++;
      log.info({ kind, job: job.id }, "job completed");
    });
    worker.on("failed", (job, error) => {
      counts.failed++;
      log.warn({ kind, job: job?.id, attempt: job?.attemptsMade, err: error.message }, "job failed");
    });
    worker.on("error", (error) => log.error({ kind, err: error.message }, "queue error"));
    return worker;
  });
  await Promise.all(workers.map((w) => w.waitUntilReady()));
  log.info({ prefix: location.prefix, kinds: options.kinds ?? JOB_KINDS }, "batch worker ready");
  return {
    counts,
    async close() {
      await Promise.all(workers.map((w) => w.close()));
    },
  };
}

async function processJob<K extends JobKind>(
  kind: K,
  job: Job,
  options: BatchWorkerOptions,
): Promise<JobResultByKind[K]> {
  try {
    const data = validateJobData(kind, job.data);
    return await HANDLERS[kind](data, {
      progress: (fraction) => job.updateProgress(Math.round(fraction * 100)),
      threads: options.threads ?? 1,
      cacheDir: options.cacheDir,
    });
  } catch (error) {
    if (error instanceof RuntimeError && PERMANENT_CODES.has(error.code))
      throw new UnrecoverableError(error.message);
    throw error;
  }
}
