/** The cloud worker's settings (JSON file, TANDEM_WORKER_* variables, flags): one schema, every default once. */
import { z } from "zod";
import {
  CLUSTER_DEFAULTS,
  CLUSTER_NAME_SETTING,
  durationMs,
  NATS_CREDENTIAL_SETTINGS,
  requireTogether,
} from "@tandem/common";
import { CODEC_NAMES, RUNTIME_SETTINGS } from "@tandem/runtime";
import { DEFAULT_EXPERT_PARALLELISM_OPTIONS } from "./expert-parallelism.ts";
import { DEFAULT_MEMBERSHIP_OPTIONS } from "./membership-options.ts";
import { DEFAULT_CONTEXT_MANAGER_OPTIONS } from "./context-manager.ts";
import { DEFAULT_DECODE_BATCHER_OPTIONS, MIN_PREFILL_CHUNK } from "./decode-batcher.ts";
import { DEFAULT_SESSION_LIMITS } from "./escalation-service.ts";

export const WORKER_ENV_PREFIX = "TANDEM_WORKER";

export const WORKER_CONFIG_SCHEMA = z
  .object({
    model: z.string().min(1).meta({ description: "checkpoint directory" }),
    split: z.int().min(1).meta({ description: "first layer this worker runs (the edge runs [0, split))" }),
    host: z.string().min(1).default("127.0.0.1").meta({ description: "address to listen on" }),
    port: z.int().min(0).max(65535).default(50052).meta({ description: "port (0 picks a free one)" }),
    workerId: z.string().min(1).optional().meta({
      description: "name of this worker in the registry, logs and replies (default: the host's name)",
    }),
    memoryMb: z
      .int()
      .min(1)
      .default(DEFAULT_CONTEXT_MANAGER_OPTIONS.memoryBudgetBytes / 2 ** 20)
      .meta({ description: "KV-cache budget of all sessions, MiB; idle sessions beyond it are evicted LRU" }),
    threads: RUNTIME_SETTINGS.threads,
    batching: z
      .boolean()
      .default(DEFAULT_DECODE_BATCHER_OPTIONS.enabled)
      .meta({ description: "batch decode steps of concurrent sessions" }),
    maxBatch: z
      .int()
      .min(1)
      .default(DEFAULT_DECODE_BATCHER_OPTIONS.maxBatch)
      .meta({ description: "most sessions in one batched step: the rows of each KV pool, allocated whole" }),
    stepTokenBudget: z
      .int()
      .min(1)
      .default(DEFAULT_DECODE_BATCHER_OPTIONS.stepTokenBudget)
      .meta({
        description: `positions one step runs: its decode batch plus a chunk (≥ ${MIN_PREFILL_CHUNK}) of a catch-up frame`,
      }),
    weights: RUNTIME_SETTINGS.weights,
    quantBlockSize: RUNTIME_SETTINGS.quantBlockSize,
    int4HeadBits: RUNTIME_SETTINGS.int4HeadBits,
    natsUrl: z
      .string()
      .min(1)
      .optional()
      .meta({ description: "NATS of the control plane (none: a standalone worker)" }),
    ...NATS_CREDENTIAL_SETTINGS,
    cluster: CLUSTER_NAME_SETTING,
    drainTimeoutMs: durationMs(0)
      .default(DEFAULT_MEMBERSHIP_OPTIONS.drainTimeoutMs)
      .meta({ description: "on SIGTERM, the longest wait for the leader to move this worker's shards away" }),
    advertise: z.string().min(1).optional().meta({
      description:
        "host:port edges and peers reach this worker at, in the node registry (default: the listening address)",
    }),
    weight: z
      .number()
      .min(0.01)
      .default(DEFAULT_MEMBERSHIP_OPTIONS.weight)
      .meta({ description: "relative KV capacity for shard placement" }),
    heartbeatMs: durationMs(50)
      .default(CLUSTER_DEFAULTS.heartbeatMs)
      .meta({ description: "heartbeat interval" }),
    expertSlots: z.int().min(0).optional().meta({
      description:
        "MoE: expert replicas this worker holds, for the expert planner (default: every expert of its layers)",
    }),
    expertParallel: z.boolean().default(false).meta({
      description:
        "MoE: hold only the experts the expert map assigns this worker and call other workers for the rest (Experts/Run, on expertPort; with TLS, workers' certificates only)",
    }),
    expertPort: z.int().min(0).max(65535).default(50053).meta({
      description:
        "expertParallel: port of tandem.v1.Experts on host, a server of its own for other workers only (0 picks one)",
    }),
    expertCodec: z.enum(CODEC_NAMES).default(DEFAULT_EXPERT_PARALLELISM_OPTIONS.codec).meta({
      description:
        "expertParallel: codec of expert calls between workers (fp32: outputs equal a single process's)",
    }),
    expertDeadlineMs: durationMs(1).default(DEFAULT_EXPERT_PARALLELISM_OPTIONS.deadlineMs).meta({
      description: "expertParallel: longest wait for another worker's expert answer before the next replica",
    }),
    expertHandoverMs: durationMs(0).default(DEFAULT_EXPERT_PARALLELISM_OPTIONS.handoverMs).meta({
      description:
        "expertParallel: how long experts a new map moved away are still served before they are freed",
    }),
    maxSessions: z
      .int()
      .min(1)
      .default(DEFAULT_SESSION_LIMITS.maxSessions)
      .meta({ description: "sessions this worker holds at most (a new one beyond: RESOURCE_EXHAUSTED)" }),
    maxSessionsPerDevice: z
      .int()
      .min(1)
      .default(DEFAULT_SESSION_LIMITS.maxSessionsPerDevice)
      .meta({ description: "sessions one device (mutual TLS) may hold on this worker" }),
    tlsCert: z.string().min(1).optional().meta({
      description: "PEM certificate of this worker; with tlsKey and tlsCa, devices connect over mutual TLS",
    }),
    tlsKey: z.string().min(1).optional().meta({ description: "PEM private key of tlsCert" }),
    tlsCa: z.string().min(1).optional().meta({
      description: "PEM CA of the deployment: devices must present a certificate it signed",
    }),
    tlsCrl: z.string().min(1).optional().meta({
      description:
        "revocation list of tlsCa (`tandem certs revoke` writes DIR/revoked.crl), re-read on change",
    }),
    insecure: z.boolean().default(false).meta({
      description: "serve plaintext on an address other machines reach (logged as a warning)",
    }),
  })
  .strict()
  .superRefine((config, ctx) => {
    requireTogether(config, ctx, ["tlsCert", "tlsKey", "tlsCa"]);
    if (config.tlsCrl !== undefined && config.tlsCa === undefined)
      ctx.addIssue({ code: "custom", path: ["tlsCa"], message: "required with tlsCrl" });
  });

export type WorkerConfig = z.output<typeof WORKER_CONFIG_SCHEMA>;
