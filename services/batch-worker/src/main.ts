/**
 * `tandem-batch-worker`: takes batch jobs (generation, calibration, graph builds) from the
 * cluster's BullMQ queues. Configuration from --config FILE, TANDEM_BATCH_* variables and
 * flags. SIGTERM finishes the jobs in progress, then exits.
 */
import { describeSchema, loadConfig, parseConfigArgs, type ConfigSchema } from "@tandem/common";
import { InvalidArgumentError } from "@tandem/common";
import { isJobKind, JOB_KINDS, type JobKind } from "./batch-jobs.ts";
import { createLogger } from "@tandem/common";
import { startBatchWorker } from "./batch-worker.ts";

export const BATCH_CONFIG_SCHEMA = {
  redisUrl: { type: "string", default: "redis://127.0.0.1:6379", description: "Redis holding the queues" },
  cluster: { type: "string", default: "default", description: "cluster name (namespaces the queues)" },
  kinds: { type: "string", default: JOB_KINDS.join(","), description: "job kinds to take, comma-separated" },
  concurrency: { type: "integer", default: 1, min: 1, description: "jobs of each kind at once" },
  lockDurationMs: {
    type: "integer",
    default: 30000,
    min: 100,
    description: "job lock lifetime; a dead worker's job is retried after it",
  },
  stalledIntervalMs: { type: "integer", default: 30000, min: 100, description: "stalled-job check interval" },
  threads: { type: "integer", default: 1, min: 1, description: "ONNX Runtime threads per job" },
} as const satisfies ConfigSchema;

export async function main(argv: string[]): Promise<number> {
  const { file, help, overrides } = parseConfigArgs(BATCH_CONFIG_SCHEMA, argv);
  if (help) {
    console.log(
      `usage: tandem-batch-worker [--config FILE] [--key value ...]\n\n${describeSchema(BATCH_CONFIG_SCHEMA, "TANDEM_BATCH")}`,
    );
    return 0;
  }
  const config = loadConfig(BATCH_CONFIG_SCHEMA, { file, envPrefix: "TANDEM_BATCH", overrides });
  const kinds = config.kinds.split(",").map((k) => k.trim());
  const bad = kinds.find((k) => !isJobKind(k));
  if (bad !== undefined)
    throw new InvalidArgumentError("kinds", `${JSON.stringify(bad)} is not one of ${JOB_KINDS.join(", ")}`);
  const log = createLogger("batch-worker", { cluster: config.cluster });
  const worker = await startBatchWorker({ ...config, kinds: kinds as JobKind[] }, log);
  // The line tests and scripts wait for.
  process.stdout.write(`running ${kinds.join(",")}\n`);
  await new Promise<void>((resolve) => {
    process.once("SIGTERM", resolve);
    process.once("SIGINT", resolve);
  });
  log.info("stopping: finishing the jobs in progress");
  await worker.close();
  return 0;
}
