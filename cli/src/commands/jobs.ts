/** `tandem jobs`: submit batch jobs to the cluster's BullMQ queues and look at them. */
import { readFile } from "node:fs/promises";
import { z } from "zod";
import {
  BATCH_JOB_BACKOFF,
  CLUSTER_NAME_SETTING,
  InvalidArgumentError,
  UsageError,
  durationMs,
} from "@tandem/common";
import {
  DEFAULT_REDIS_URL,
  JOB_KINDS,
  isJobKind,
  showJob,
  submitJob,
  waitForJob,
  type JobKind,
  type SubmitOptions,
} from "@tandem/batch-worker";
import type { CommandDefinition } from "../command.ts";

const JOBS_OPTIONS = z
  .object({
    data: z
      .string()
      .min(1)
      .optional()
      .meta({ description: "submit: the job's data, JSON or @FILE (see the README's \"Batch jobs\")" }),
    wait: z.boolean().default(false).meta({
      description:
        "submit: wait for the job and print its result (exit 1 if it fails, 2 if --timeout-ms passes first)",
    }),
    attempts: z
      .int()
      .min(1)
      .default(BATCH_JOB_BACKOFF.attempts)
      .meta({ description: "submit: tries before the job fails for good (bad data fails at once)" }),
    timeoutMs: durationMs(1)
      .default(3_600_000)
      .meta({ description: "with --wait: give up waiting after this long (the job carries on)" }),
    redis: z.string().min(1).default(DEFAULT_REDIS_URL).meta({
      description: "Redis holding the queues: redis://[user@]host:port[/db], or rediss:// for TLS",
    }),
    redisPasswordFile: z.string().min(1).optional().meta({ description: "file holding the Redis password" }),
    redisCa: z.string().min(1).optional().meta({ description: "PEM CA of a rediss:// server" }),
    cluster: CLUSTER_NAME_SETTING,
  })
  .strict();

async function readData(value: string | undefined): Promise<unknown> {
  if (value === undefined) throw new UsageError("--data", "is required (JSON, or @FILE)");
  const text = value.startsWith("@")
    ? await readFile(value.slice(1), "utf8").catch((error: Error) => {
        throw new UsageError("--data", `cannot read ${value.slice(1)} (${error.message})`);
      })
    : value;
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new UsageError("--data", `is not JSON (${(error as Error).message})`);
  }
}

export const jobsCommand: CommandDefinition<typeof JOBS_OPTIONS> = {
  name: "jobs",
  summary: "submit batch jobs to BullMQ and show them",
  description: "tandem jobs submit KIND --data JSON|@FILE [--wait]   or   tandem jobs show KIND ID",
  options: JOBS_OPTIONS,
  positionals: [
    { name: "ACTION", description: "submit or show" },
    { name: "KIND", description: JOB_KINDS.join(", ") },
    { name: "ID", description: "show: the job's id", required: false },
  ],
  async run(values, [action, kindName, id]) {
    if (action !== "submit" && action !== "show")
      throw new UsageError("ACTION", `must be submit or show, got ${JSON.stringify(action)}`);
    if (!isJobKind(kindName))
      throw new UsageError("KIND", `must be one of ${JOB_KINDS.join(", ")}, got ${JSON.stringify(kindName)}`);
    const kind: JobKind = kindName;
    const options: SubmitOptions = {
      redisUrl: values.redis,
      redisSecrets: { passwordFile: values.redisPasswordFile, caFile: values.redisCa },
      cluster: values.cluster,
      attempts: values.attempts,
    };
    if (action === "show") {
      if (!id) throw new UsageError("ID", "is required");
      const view = await showJob(kind, id, options);
      if (!view) {
        console.error(`tandem jobs: no ${kind} job ${id}`);
        return 1;
      }
      console.log(JSON.stringify(view));
      return 0;
    }
    if (id !== undefined) throw new UsageError(id, "is not expected here");
    const data = await readData(values.data);
    const jobId = await submitJob(kind, data, options).catch((error: unknown) => {
      if (error instanceof InvalidArgumentError) throw new UsageError("--data", error.message);
      throw error;
    });
    if (!values.wait) {
      console.log(JSON.stringify({ kind, id: jobId }));
      return 0;
    }
    // Redis unreachable or lost is thrown (UnavailableError, exit 1); the job's own end is printed.
    const outcome = await waitForJob(kind, jobId, options, values.timeoutMs);
    console.log(JSON.stringify({ kind, id: jobId, ...outcome }));
    if (outcome.state === "completed") return 0;
    if (outcome.state === "failed") return 1;
    // Not a failure of the job, which may still complete: exit 2 (exit-codes.ts: what the user
    // gave, here --timeout-ms, did not work), so scripts can tell it from a failed job's 1.
    console.error(
      `tandem jobs: gave up waiting after ${values.timeoutMs} ms; the job is not finished (tandem jobs show ${kind} ${jobId})`,
    );
    return 2;
  },
};
