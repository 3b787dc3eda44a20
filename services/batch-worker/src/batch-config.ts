/** The batch worker's settings (JSON file, TANDEM_BATCH_* variables, flags): one schema, every default once. */
import { z } from "zod";
import { CLUSTER_NAME_SETTING, durationMs, healthSettings } from "@tandem/common";
import { JOB_KINDS } from "./batch-jobs.ts";
import { DEFAULT_REDIS_URL } from "./batch-queues.ts";
import { DEFAULT_BATCH_WORKER_OPTIONS } from "./batch-worker.ts";

export const BATCH_ENV_PREFIX = "TANDEM_BATCH";

export const BATCH_CONFIG_SCHEMA = z
  .object({
    redisUrl: z.string().min(1).default(DEFAULT_REDIS_URL).meta({
      description: "Redis holding the queues: redis://[user@]host:port[/db], or rediss:// for TLS",
    }),
    redisPasswordFile: z.string().min(1).optional().meta({
      description: "file holding the Redis password (e.g. a mounted Secret), instead of one in redisUrl",
    }),
    redisCa: z.string().min(1).optional().meta({
      description: "PEM CA of a rediss:// server (default: the system's CAs)",
    }),
    cluster: CLUSTER_NAME_SETTING,
    kinds: z
      .array(z.enum(JOB_KINDS))
      .min(1)
      .default([...JOB_KINDS])
      .meta({ description: "job kinds to take, comma-separated" }),
    concurrency: z
      .int()
      .min(1)
      .default(DEFAULT_BATCH_WORKER_OPTIONS.concurrency)
      .meta({ description: "jobs of each kind at once" }),
    lockDurationMs: durationMs(100)
      .default(DEFAULT_BATCH_WORKER_OPTIONS.lockDurationMs)
      .meta({ description: "job lock lifetime; a dead worker's job is retried after it" }),
    stalledIntervalMs: durationMs(100)
      .default(DEFAULT_BATCH_WORKER_OPTIONS.stalledIntervalMs)
      .meta({ description: "stalled-job check interval" }),
    threads: z
      .int()
      .min(1)
      .default(DEFAULT_BATCH_WORKER_OPTIONS.threads)
      .meta({ description: "ONNX Runtime threads per job" }),
    fileRoots: z.array(z.string().min(1)).min(1).default(["."]).meta({
      description:
        "directories the files named in jobs (models, texts, outputs, caches) must lie in, comma-separated (default: the working directory)",
    }),
    ...healthSettings("while taking jobs with Redis connected"),
  })
  .strict();
