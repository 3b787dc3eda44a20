/**
 * Submitting batch jobs to a cluster's queues and reading them back: what `tandem jobs`
 * and other clients use. Data is validated before it reaches Redis; a Redis that cannot
 * be reached is one UnavailableError naming it.
 */
import { Job, Queue, QueueEvents } from "bullmq";
import {
  BATCH_JOB_BACKOFF,
  InvalidArgumentError,
  redactedUrl,
  TandemError,
  UnauthenticatedError,
  UnavailableError,
} from "@tandem/common";
import { validateJobData, type JobInputByKind, type JobKind } from "./batch-jobs.ts";
import {
  BACKOFF_STRATEGY,
  batchQueueLocation,
  type BatchQueueLocation,
  type RedisSecrets,
} from "./batch-queues.ts";

export interface SubmitOptions {
  redisUrl: string;
  cluster: string;
  /** Password and CA files of the Redis connection. */
  redisSecrets?: RedisSecrets;
  /** Tries before the job fails for good. @default BATCH_JOB_BACKOFF.attempts */
  attempts?: number;
}

/** Runs `use` with the kind's queue and its location, naming Redis when it cannot be reached. */
async function withQueue<T>(
  kind: JobKind,
  options: SubmitOptions,
  use: (queue: Queue, location: BatchQueueLocation) => Promise<T>,
): Promise<T> {
  const location = batchQueueLocation(options.redisUrl, options.cluster, options.redisSecrets);
  const queue = new Queue(kind, { connection: location.clientConnection, prefix: location.prefix });
  // Connection errors reach the caller through the failed command; the event is only noise.
  queue.on("error", () => undefined);
  try {
    return await use(queue, location);
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
    return unreachable(redisUrl, message, error);
  if (/WRONGPASS|NOAUTH|NOPERM/.test(message))
    return new UnauthenticatedError(`Redis at ${redactedUrl(redisUrl)} refused the credentials (${message})`);
  return error;
}

/** The one wording of a Redis that cannot be reached, at the start or mid-wait. */
function unreachable(redisUrl: string, reason: string, cause?: unknown): UnavailableError {
  return new UnavailableError(`Redis at ${redactedUrl(redisUrl)} cannot be reached (${reason})`, { cause });
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

/**
 * How waiting for a job ends: the job's result, its reason for failing for good, or the
 * wait running out first (the job goes on; `tandem jobs show` finds it later).
 */
export type JobOutcome =
  | { state: "completed"; result: unknown }
  | { state: "failed"; failedReason: string }
  | { state: "timed-out" };

/**
 * Waits until the job completes, fails for good, or `timeoutMs` passes, and says which.
 * Thrown are only a job that does not exist (InvalidArgumentError) and a Redis unreachable
 * at the start or lost mid-wait (UnavailableError naming it).
 *
 * Not BullMQ's Job.waitUntilFinished: it looks whether the job already finished inside an
 * async Promise executor, so a Redis lost at that moment is an unhandled rejection (the
 * CLI would crash) and its wait never ends; and it rejects with a plain Error for a failed
 * job and for anything else alike.
 *
 * The events are followed from the last one before the job's state was read, not from
 * whatever is newest once the events connection reads: a job that finished between the
 * two would otherwise be missed, and the wait would run out on a finished job.
 */
export async function waitForJob(
  kind: JobKind,
  id: string,
  options: SubmitOptions,
  timeoutMs: number,
): Promise<JobOutcome> {
  return withQueue(kind, options, async (queue, location) => {
    // Read before the job: an unreachable Redis fails here, at once.
    const lastEventId = await lastEventIdOf(queue);
    const job = await Job.fromId(queue, id);
    if (!job) throw new InvalidArgumentError("ID", `no ${kind} job ${id}`);
    const finished = await finishedOutcome(queue, job);
    if (finished) return finished;
    let lastError: Error | undefined;
    let redisLost: (error: UnavailableError) => void = () => undefined;
    // When Redis drops and the reconnects the events connection tries all fail, the wait fails.
    const events = new QueueEvents(kind, {
      prefix: location.prefix,
      lastEventId,
      connection: location.eventsConnection(() =>
        redisLost(unreachable(options.redisUrl, lastError?.message ?? "connection lost", lastError)),
      ),
    });
    // Connection errors end the wait through the connection giving up; here they only give its reason.
    events.on("error", (error) => (lastError = error));
    let timer: NodeJS.Timeout | undefined;
    try {
      return await new Promise<JobOutcome>((resolve, reject) => {
        redisLost = reject;
        timer = setTimeout(() => resolve({ state: "timed-out" }), timeoutMs);
        events.on("completed", (args) => {
          if (args.jobId === id) resolve({ state: "completed", result: args.returnvalue });
        });
        events.on("failed", (args) => {
          if (args.jobId === id) resolve({ state: "failed", failedReason: args.failedReason });
        });
        events.waitUntilReady().catch(reject);
      });
    } finally {
      clearTimeout(timer);
      await events.close().catch(() => undefined);
    }
  });
}

/**
 * The id of the newest entry in the queue's event stream, or "0-0" while it has none:
 * where following the events starts so that nothing after this moment is missed.
 */
async function lastEventIdOf(queue: Queue): Promise<string> {
  // BullMQ's client declares only the commands BullMQ itself sends; XREVRANGE goes as a script.
  const client = await queue.backend.client;
  client.defineCommand("tandemLastEventId", {
    numberOfKeys: 1,
    lua: "local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1) return newest[1] and newest[1][1] or '0-0'",
    readOnly: true,
  });
  return (await client.runCommand("tandemLastEventId", [queue.keys.events])) as string;
}

/** The outcome of a job that has finished (completed, or failed for good); undefined while it has not. */
async function finishedOutcome(queue: Queue, job: Job): Promise<JobOutcome | undefined> {
  const state = await job.getState();
  if (state !== "completed" && state !== "failed") return undefined;
  // Read after the state: a finished job's result and reason no longer change.
  const finished = await Job.fromId(queue, job.id!);
  return state === "completed"
    ? { state, result: finished?.returnvalue ?? undefined }
    : { state, failedReason: finished?.failedReason ?? "" };
}
