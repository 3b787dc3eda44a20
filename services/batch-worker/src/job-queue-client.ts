/**
 * Submitting batch jobs to a cluster's queues and reading them back: what `tandem jobs`
 * and other clients use. Data is validated before it reaches Redis; a Redis that cannot
 * be reached is one UnavailableError naming it.
 */
import { Job, Queue, QueueEvents } from "bullmq";
import { BATCH_JOB_BACKOFF, InvalidArgumentError, TandemError, UnavailableError } from "@tandem/common";
import { validateJobData, type JobInputByKind, type JobKind } from "./batch-jobs.ts";
import { BACKOFF_STRATEGY, batchQueueLocation } from "./batch-queues.ts";

export interface SubmitOptions {
  redisUrl: string;
  cluster: string;
  /** Tries before the job fails for good. @default BATCH_JOB_BACKOFF.attempts */
  attempts?: number;
}

/** Runs `use` with the kind's queue, naming Redis when it cannot be reached. */
async function withQueue<T>(
  kind: JobKind,
  options: SubmitOptions,
  use: (queue: Queue) => Promise<T>,
): Promise<T> {
  const location = batchQueueLocation(options.redisUrl, options.cluster);
  const queue = new Queue(kind, { connection: location.clientConnection, prefix: location.prefix });
  // Connection errors reach the caller through the failed command; the event is only noise.
  queue.on("error", () => undefined);
  try {
    return await use(queue);
  } catch (error) {
    throw redisError(error, options.redisUrl);
  } finally {
    await queue.close().catch(() => undefined);
  }
}

function redisError(error: unknown, redisUrl: string): unknown {
  if (error instanceof TandemError) return error;
  const code = (error as NodeJS.ErrnoException).code;
  const message = (error as Error).message ?? String(error);
  if (
    code === "ECONNREFUSED" ||
    code === "ENOTFOUND" ||
    code === "ETIMEDOUT" ||
    /Connection is closed/.test(message)
  )
    return new UnavailableError(`Redis at ${redisUrl} cannot be reached (${message})`, { cause: error });
  return error;
}

/** Validates and enqueues a job; returns its id. Bad data throws InvalidArgumentError naming the field. */
export async function submitJob<K extends JobKind>(
  kind: K,
  data: JobInputByKind[K] | unknown,
  options: SubmitOptions,
): Promise<string> {
  validateJobData(kind, data);
  return withQueue(kind, options, async (queue) => {
    const job = await queue.add(kind, data, {
      attempts: options.attempts ?? BATCH_JOB_BACKOFF.attempts,
      // The worker computes the waits between tries (the retry policy's jittered backoff).
      backoff: { type: BACKOFF_STRATEGY },
      // Results stay readable for a week; failures for a month.
      removeOnComplete: { age: 7 * 24 * 3600 },
      removeOnFail: { age: 30 * 24 * 3600 },
    });
    return job.id!;
  });
}

export interface JobView {
  kind: JobKind;
  id: string;
  state: string;
  /** The job's latest Progress ({phase, done, total}), once it has reported one. */
  progress: unknown;
  attemptsMade: number;
  result?: unknown;
  failedReason?: string;
}

export async function showJob(
  kind: JobKind,
  id: string,
  options: SubmitOptions,
): Promise<JobView | undefined> {
  return withQueue(kind, options, async (queue) => {
    const job = await Job.fromId(queue, id);
    if (!job) return undefined;
    return {
      kind,
      id,
      state: await job.getState(),
      progress: job.progress,
      attemptsMade: job.attemptsMade,
      result: job.returnvalue ?? undefined,
      failedReason: job.failedReason || undefined,
    };
  });
}

/** Waits until the job completes (its result) or fails for good (throws with the reason). */
export async function waitForJob(
  kind: JobKind,
  id: string,
  options: SubmitOptions,
  timeoutMs: number,
): Promise<unknown> {
  return withQueue(kind, options, async (queue) => {
    const location = batchQueueLocation(options.redisUrl, options.cluster);
    const events = new QueueEvents(kind, { connection: location.connection, prefix: location.prefix });
    try {
      await events.waitUntilReady();
      const job = await Job.fromId(queue, id);
      if (!job) throw new InvalidArgumentError("ID", `no ${kind} job ${id}`);
      return await job.waitUntilFinished(events, timeoutMs);
    } finally {
      await events.close();
    }
  });
}
