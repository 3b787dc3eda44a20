/**
 * Submitting batch jobs to a cluster's queues and reading them back: what `tandem jobs`
 * and other clients use. Data is validated before it reaches Redis.
 */
import { Job, Queue, QueueEvents } from "bullmq";
import { InvalidArgumentError } from "@tandem/common";
import { validateJobData, type JobKind } from "./batch-jobs.ts";
import { batchQueueLocation } from "./batch-queues.ts";

export interface SubmitOptions {
  redisUrl: string;
  cluster: string;
  attempts?: number;
}

/** Validates and enqueues a job; returns its id. Bad data throws InvalidArgumentError naming the field. */
export async function submitJob(kind: JobKind, data: unknown, options: SubmitOptions): Promise<string> {
  validateJobData(kind, data);
  const location = batchQueueLocation(options.redisUrl, options.cluster);
  const queue = new Queue(kind, { connection: location.connection, prefix: location.prefix });
  try {
    const job = await queue.add(kind, data, {
      attempts: options.attempts ?? 3,
      backoff: { type: "exponential", delay: 1000 },
      // Results stay readable for a week; failures for a month.
      removeOnComplete: { age: 7 * 24 * 3600 },
      removeOnFail: { age: 30 * 24 * 3600 },
    });
    return job.id!;
  } finally {
    await queue.close();
  }
}

export interface JobView {
  kind: JobKind;
  id: string;
  state: string;
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
  const location = batchQueueLocation(options.redisUrl, options.cluster);
  const queue = new Queue(kind, { connection: location.connection, prefix: location.prefix });
  try {
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
  } finally {
    await queue.close();
  }
}

/** Waits until the job completes (its result) or fails for good (throws with the reason). */
export async function waitForJob(
  kind: JobKind,
  id: string,
  options: SubmitOptions,
  timeoutMs: number,
): Promise<unknown> {
  const location = batchQueueLocation(options.redisUrl, options.cluster);
  const queue = new Queue(kind, { connection: location.connection, prefix: location.prefix });
  const events = new QueueEvents(kind, { connection: location.connection, prefix: location.prefix });
  try {
    await events.waitUntilReady();
    const job = await Job.fromId(queue, id);
    if (!job) throw new InvalidArgumentError("ID", `no ${kind} job ${id}`);
    return await job.waitUntilFinished(events, timeoutMs);
  } finally {
    await events.close();
    await queue.close();
  }
}
