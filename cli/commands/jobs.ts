/** `tandem jobs`: submit batch jobs to the cluster's BullMQ queues and look at them. */
import { readFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { Job, Queue, QueueEvents } from "bullmq";
import { InvalidArgumentError } from "../../runtime/src/errors.ts";
import { isJobKind, JOB_KINDS, validateJobData, type JobKind } from "../../shared/src/batch/batch-jobs.ts";
import { batchQueueLocation } from "../../shared/src/batch/batch-queues.ts";
import { CliUsageError } from "../cli-errors.ts";
import { parseIntegerOption } from "../cli-options.ts";

const HELP = `usage: tandem jobs submit KIND --data JSON|@FILE [--wait] [options]
       tandem jobs show KIND ID [options]

  KIND               ${JOB_KINDS.join(", ")}
  --data JSON|@FILE  the job's data (see the README's "Batch jobs")
  --wait             wait for the job and print its result (exit 1 if it fails)
  --attempts N       tries before the job fails for good (default 3; bad data fails at once)
  --timeout-ms N     with --wait: give up waiting after N ms (default 3600000)
  --redis URL        default redis://127.0.0.1:6379
  --cluster NAME     default "default"`;

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

async function parseData(value: string | undefined): Promise<unknown> {
  if (value === undefined) throw new CliUsageError("--data", "is required (JSON, or @FILE)");
  const text = value.startsWith("@")
    ? await readFile(value.slice(1), "utf8").catch((error: Error) => {
        throw new CliUsageError("--data", `cannot read ${value.slice(1)} (${error.message})`);
      })
    : value;
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new CliUsageError("--data", `is not JSON (${(error as Error).message})`);
  }
}

export const jobsCommand = {
  summary: "submit and inspect batch jobs",
  async run(args: string[]): Promise<number> {
    const { values, positionals } = parseArgs({
      args,
      options: {
        data: { type: "string" },
        wait: { type: "boolean" },
        attempts: { type: "string" },
        "timeout-ms": { type: "string" },
        redis: { type: "string" },
        cluster: { type: "string" },
        help: { type: "boolean" },
      },
      allowPositionals: true,
      strict: true,
    });
    const [action, kind, id] = positionals;
    if (values.help || !action) {
      console.log(HELP);
      return values.help ? 0 : 2;
    }
    if (kind === undefined || !isJobKind(kind))
      throw new CliUsageError(
        "KIND",
        `must be one of ${JOB_KINDS.join(", ")}, got ${JSON.stringify(kind ?? "")}`,
      );
    const options: SubmitOptions = {
      redisUrl: values.redis ?? "redis://127.0.0.1:6379",
      cluster: values.cluster ?? "default",
      attempts: parseIntegerOption("--attempts", values.attempts, 3, 1),
    };
    if (action === "submit") {
      const data = await parseData(values.data);
      const jobId = await submitJob(kind, data, options).catch((error: unknown) => {
        if (error instanceof InvalidArgumentError) throw new CliUsageError("--data", error.message);
        throw error;
      });
      if (!values.wait) {
        console.log(JSON.stringify({ kind, id: jobId }));
        return 0;
      }
      const timeoutMs = parseIntegerOption("--timeout-ms", values["timeout-ms"], 3_600_000, 1);
      try {
        const result = await waitForJob(kind, jobId, options, timeoutMs);
        console.log(JSON.stringify({ kind, id: jobId, state: "completed", result }));
        return 0;
      } catch (error) {
        console.log(
          JSON.stringify({ kind, id: jobId, state: "failed", failedReason: (error as Error).message }),
        );
        return 1;
      }
    }
    if (action === "show") {
      if (!id) throw new CliUsageError("ID", "is required");
      const view = await showJob(kind, id, options);
      if (!view) {
        console.error(`tandem jobs: no ${kind} job ${id}`);
        return 1;
      }
      console.log(JSON.stringify(view));
      return 0;
    }
    throw new CliUsageError("action", `must be submit or show, got ${JSON.stringify(action)}`);
  },
};
