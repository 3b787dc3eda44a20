/** `tandem status`: the cluster as the control plane sees it — nodes, leader, placement and balance. */
import { parseArgs } from "node:util";
import { clusterStatus } from "@tandem/cluster";

export const statusCommand = {
  summary: "show the cluster",
  async run(args: string[]): Promise<number> {
    const { values } = parseArgs({
      args,
      options: { nats: { type: "string" }, cluster: { type: "string" }, json: { type: "boolean" } },
      strict: true,
    });
    const status = await clusterStatus(values.nats ?? "nats://127.0.0.1:4222", values.cluster ?? "default");
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
      "node           endpoint               alive  draining  sessions  kv MiB  shards  experts  expert load  map seen",
    );
    for (const n of status.nodes) {
      console.log(
        `${n.id.padEnd(14)} ${n.endpoint.padEnd(22)} ${String(n.alive).padEnd(6)} ${String(n.draining).padEnd(9)} ${String(n.sessions).padStart(8)} ${(n.kvBytes / 2 ** 20).toFixed(1).padStart(7)} ${String(n.shards).padStart(7)} ${String(n.expertReplicas).padStart(8)} ${`${(100 * n.expertLoadShare).toFixed(1)}%`.padStart(12)} ${String(n.expertMapVersion ?? "-").padStart(9)}`,
      );
    }
    return 0;
  },
};
