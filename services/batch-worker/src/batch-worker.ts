/**
 * The batch worker: one BullMQ worker per job kind on the cluster's queues. A job whose
 * data or files are bad fails at once, unretried, with the runtime's message naming the
 * field or file; anything else (a crash, a lost lock) is retried by BullMQ: a worker that
 * dies mid-job leaves the job stalled, and another worker (or this one, restarted) takes
 * it again. Closing waits for the jobs in progress.
 */
import { UnrecoverableError, Worker, type Job, type WorkerOptions } from "bullmq";
import {
  BATCH_JOB_BACKOFF,
  backoffDelayMs,
  isRetryable,
  type BackoffPolicy,
  type Logger,
} from "@tandem/common";
import type { Registry } from "@tandem/common/metrics";
import {
  JOB_KINDS,
  validateJobData,
  type JobDataByKind,
  type JobKind,
  type JobResultByKind,
} from "./batch-jobs.ts";
import { batchQueueLocation, type RedisSecrets } from "./batch-queues.ts";
import { checkJobPaths } from "./file-roots.ts";
import { runBuildGraphsJob, runCalibrateJob, runGenerateJob, type JobContext } from "./job-handlers.ts";

export interface BatchWorkerOptions {
  redisUrl: string;
  cluster: string;
  /** Password and CA files of the Redis connection. */
  redisSecrets?: RedisSecrets;
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
  /** Waits between tries of a failed job. @default BATCH_JOB_BACKOFF */
  backoff?: BackoffPolicy;
  cacheDir?: string;
  /**
   * Directories the paths in jobs' data must lie in (file-roots.ts); a job naming a path
   * elsewhere fails at once, naming the field. @default anywhere (the program sets its own)
   */
  fileRoots?: string[];
  /** Registry to add the worker's metrics to (BatchMetrics). @default no metrics */
  metrics?: Registry;
}

export const DEFAULT_BATCH_WORKER_OPTIONS = {
  concurrency: 1,
  lockDurationMs: 30_000,
  stalledIntervalMs: 30_000,
  threads: 1,
} as const;

/**
 * The BullMQ Worker options a batch worker runs each kind's queue with: where the queue
 * lives, its limits, and the retry policy's backoff (tests build their Worker with it too).
 */
export function batchWorkerOptions(options: BatchWorkerOptions): WorkerOptions {
  const location = batchQueueLocation(options.redisUrl, options.cluster, options.redisSecrets);
  const policy = options.backoff ?? BATCH_JOB_BACKOFF;
  return {
    connection: location.connection,
    prefix: location.prefix,
    concurrency: options.concurrency ?? DEFAULT_BATCH_WORKER_OPTIONS.concurrency,
    lockDuration: options.lockDurationMs ?? DEFAULT_BATCH_WORKER_OPTIONS.lockDurationMs,
    stalledInterval: options.stalledIntervalMs ?? DEFAULT_BATCH_WORKER_OPTIONS.stalledIntervalMs,
    // Jobs submitted by submitJob ask for this strategy: the retry policy's jittered backoff.
    settings: { backoffStrategy: (attemptsMade: number) => backoffDelayMs(policy, attemptsMade) },
  };
}

export interface BatchWorker {
  /** Jobs finished by this process, per outcome (for logs and tests). */
  readonly counts: { completed: number; failed: number };
  /** Whether every kind's worker is running with its Redis connections up (what its probe reports). */
  healthy(): boolean;
  close(): Promise<void>;
}

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
  const workerOptions = batchWorkerOptions(options);
  const counts = { completed: 0, failed: 0 };
  const kinds = options.kinds ?? [...JOB_KINDS];
  // Loaded only by a worker that serves metrics: prom-client stays out of the others.
  const metrics =
    options.metrics &&
    new (await import("./batch-metrics.ts")).BatchMetrics(
      options.metrics,
      kinds,
      batchQueueLocation(options.redisUrl, options.cluster, options.redisSecrets),
      log,
    );
  const workers = kinds.map((kind) => {
    const worker = new Worker(kind, (job: Job) => processJob(kind, job, options), workerOptions);
    worker.on("completed", (job) => {
      counts.completed++;
      metrics?.jobFinished(kind, "completed", job);
      log.info({ kind, job: job.id }, "job completed");
    });
    worker.on("failed", (job, error) => {
      counts.failed++;
      metrics?.jobFinished(kind, "failed", job);
      log.warn({ kind, job: job?.id, attempt: job?.attemptsMade, err: error.message }, "job failed");
    });
    worker.on("error", (error) => log.error({ kind, err: error.message }, "queue error"));
    return worker;
  });
  await Promise.all(workers.map((w) => w.waitUntilReady()));
  // Each worker's connections: one for commands and one for its blocking wait for jobs.
  const clients = await Promise.all(
    workers.flatMap((w) => {
      const backend = w.getBackend();
      return backend.blockingClient ? [backend.client, backend.blockingClient] : [backend.client];
    }),
  );
  log.info({ prefix: workerOptions.prefix, kinds: options.kinds ?? JOB_KINDS }, "batch worker ready");
  return {
    counts,
    healthy: () => workers.every((w) => w.isRunning()) && clients.every((c) => c.status === "ready"),
    async close() {
      await Promise.all(workers.map((w) => w.close()));
      await metrics?.close();
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
    if (options.fileRoots) checkJobPaths(kind, data, options.fileRoots);
    return await HANDLERS[kind](data, {
      progress: (progress) => job.updateProgress({ ...progress }),
      threads: options.threads ?? DEFAULT_BATCH_WORKER_OPTIONS.threads,
      cacheDir: options.cacheDir,
    });
  } catch (error) {
    // Data or files that cannot work fail at once; anything else is tried again (the retry policy).
    if (!isRetryable(error)) throw new UnrecoverableError((error as Error).message);
    throw error;
  }
}
