/** `tandem jobs`: submit batch jobs to the cluster's BullMQ queues and look at them. */
import { readFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { InvalidArgumentError, UsageError } from "@tandem/common";
import {
  isJobKind,
  JOB_KINDS,
  showJob,
  submitJob,
  waitForJob,
  type SubmitOptions,
} from "@tandem/batch-worker";
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

async function parseData(value: string | undefined): Promise<unknown> {
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
      throw new UsageError(
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
        if (error instanceof InvalidArgumentError) throw new UsageError("--data", error.message);
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
      if (!id) throw new UsageError("ID", "is required");
      const view = await showJob(kind, id, options);
      if (!view) {
        console.error(`tandem jobs: no ${kind} job ${id}`);
        return 1;
      }
      console.log(JSON.stringify(view));
      return 0;
    }
    throw new UsageError("action", `must be submit or show, got ${JSON.stringify(action)}`);
  },
};
