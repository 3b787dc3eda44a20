/** A control-plane replica's settings (JSON file, TANDEM_CONTROL_* variables, flags): one schema, every default once. */
import { z } from "zod";
import {
  CLUSTER_DEFAULTS,
  CLUSTER_NAME_SETTING,
  durationMs,
  healthSettings,
  NATS_CREDENTIAL_SETTINGS,
} from "@tandem/common";
import { DEFAULT_CONTROLLER_OPTIONS } from "./controller.ts";
import { DEFAULT_LEASE_TIMING, leaseTtlProblem } from "./leader-lease.ts";

export const CONTROL_ENV_PREFIX = "TANDEM_CONTROL";

export const CONTROL_CONFIG_SCHEMA = z
  .object({
    natsUrl: z
      .string()
      .min(1)
      .default(CLUSTER_DEFAULTS.natsUrl)
      .meta({ description: "NATS server(s) with JetStream" }),
    ...NATS_CREDENTIAL_SETTINGS,
    cluster: CLUSTER_NAME_SETTING,
    replicaId: z
      .string()
      .min(1)
      .optional()
      .meta({ description: "name of this replica (default: the host's name and the process id)" }),
    shardCount: z
      .int()
      .min(1)
      .default(DEFAULT_CONTROLLER_OPTIONS.shardCount)
      .meta({ description: "virtual KV shards" }),
    tickMs: durationMs(10)
      .default(DEFAULT_CONTROLLER_OPTIONS.tickMs)
      .meta({ description: "control loop interval" }),
    leaseTtlMs: durationMs(DEFAULT_LEASE_TIMING.marginMs + 1)
      .default(DEFAULT_CONTROLLER_OPTIONS.leaseTtlMs)
      .meta({
        description: `leader lease duration; must exceed ${DEFAULT_LEASE_TIMING.marginMs} ms (the margin a leader keeps) + tickMs`,
      }),
    heartbeatTtlMs: durationMs(100)
      .default(DEFAULT_CONTROLLER_OPTIONS.heartbeatTtlMs)
      .meta({ description: "a worker is dead after this long without a heartbeat" }),
    experts: z.int().min(0).default(DEFAULT_CONTROLLER_OPTIONS.experts).meta({
      description:
        "MoE experts to place: experts per layer × cloud layers, id (layer − split)·experts + expert (0: a dense model)",
    }),
    expertWindowMs: durationMs(50)
      .default(DEFAULT_CONTROLLER_OPTIONS.expertWindowMs)
      .meta({ description: "expert load window" }),
    ...healthSettings("while connected to NATS and ticking"),
  })
  .strict()
  .superRefine((config, context) => {
    // A lease within the margin alone is already refused by the minimum, in one line.
    if (config.leaseTtlMs <= DEFAULT_LEASE_TIMING.marginMs) return;
    const problem = leaseTtlProblem(config.leaseTtlMs, config.tickMs);
    if (problem)
      context.addIssue({ code: "custom", path: ["leaseTtlMs"], input: config.leaseTtlMs, message: problem });
  });
