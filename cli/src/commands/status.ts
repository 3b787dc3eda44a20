/** `tandem status`: the cluster as the control plane sees it — nodes, leader, placement and balance. */
import { z } from "zod";
import { clusterStatus } from "@tandem/cluster";
import {
  CLUSTER_DEFAULTS,
  CLUSTER_NAME_SETTING,
  durationMs,
  NATS_CREDENTIAL_SETTINGS,
  natsCredentialsOf,
} from "@tandem/common";
import type { CommandDefinition } from "../command.ts";

const STATUS_OPTIONS = z
  .object({
    nats: z
      .string()
      .min(1)
      .default(CLUSTER_DEFAULTS.natsUrl)
      .meta({ description: "NATS of the control plane" }),
    ...NATS_CREDENTIAL_SETTINGS,
    cluster: CLUSTER_NAME_SETTING,
    heartbeatTtlMs: durationMs(1)
      .default(CLUSTER_DEFAULTS.heartbeatTtlMs)
      .meta({ description: "a node is shown dead after this long without a heartbeat" }),
    json: z.boolean().default(false).meta({ description: "print one JSON object instead of a table" }),
  })
  .strict();

export const statusCommand: CommandDefinition<typeof STATUS_OPTIONS> = {
  name: "status",
  summary: "the cluster: leader, placement, nodes and their load",
  options: STATUS_OPTIONS,
  async run(values) {
    const status = await clusterStatus(
      values.nats,
      values.cluster,
      values.heartbeatTtlMs,
      natsCredentialsOf(values),
    );
    if (values.json) {
      console.log(JSON.stringify(status));
      return 0;
    }
    console.log(`cluster ${status.cluster}`);
    console.log(
      `leader: ${status.leader ? `${status.leader.holder} (lease ${status.leader.expiresInMs} ms left)` : "none"}`,
    );
    console.log(
      status.placement
        ? `placement: version ${status.placement.version}, ${status.placement.shardCount} shards, max/mean shards per node ${status.placement.maxOverMeanShards.toFixed(2)}`
        : "placement: none yet",
    );
    if (status.experts)
      console.log(
        `experts: version ${status.experts.version}, ${status.experts.experts} experts in ${status.experts.replicas} replicas, expected max/mean load ${status.experts.maxMeanLoad.toFixed(3)}`,
      );
    console.log(
      "node           endpoint               alive  draining  sessions  kv MiB  shards  experts  held  expert load  map seen",
    );
    for (const n of status.nodes) {
      console.log(
        `${n.id.padEnd(14)} ${n.endpoint.padEnd(22)} ${String(n.alive).padEnd(6)} ${String(n.draining).padEnd(9)} ${String(n.sessions).padStart(8)} ${(n.kvBytes / 2 ** 20).toFixed(1).padStart(7)} ${String(n.shards).padStart(7)} ${String(n.expertReplicas).padStart(8)} ${String(n.expertsHeld ?? "-").padStart(5)} ${`${(100 * n.expertLoadShare).toFixed(1)}%`.padStart(12)} ${String(n.expertMapVersion ?? "-").padStart(9)}`,
      );
    }
    return 0;
  },
};
