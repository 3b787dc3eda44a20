/** `tandem status`: the cluster as the control plane sees it — nodes, leader, placement and balance. */
import { parseArgs } from "node:util";
import { connect } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import { NodeRegistry } from "../../services/control-plane/src/node-registry.ts";
import type { LeaseRecord } from "../../services/control-plane/src/leader-lease.ts";
import { controlPlaneNames } from "../../shared/src/control-plane/control-plane-names.ts";
import { PlacementStore, readExpertMap } from "../../shared/src/control-plane/placement-map.ts";

export interface ClusterStatus {
  cluster: string;
  leader?: { holder: string; expiresInMs: number };
  placement?: { version: number; fencingToken: number; shardCount: number; maxOverMeanShards: number };
  /** MoE clusters: the expert map's version and its expected max/mean worker load. */
  experts?: { version: number; experts: number; replicas: number; maxMeanLoad: number };
  nodes: {
    id: string;
    endpoint: string;
    alive: boolean;
    draining: boolean;
    sessions: number;
    kvBytes: number;
    shards: number;
    /** Expert replicas the expert map gives the node, and its share of the expected expert load. */
    expertReplicas: number;
    expertLoadShare: number;
    /** The expert map version the node reports having taken up. */
    expertMapVersion?: number;
    heartbeatAgeMs: number;
  }[];
}

export async function clusterStatus(
  natsUrl: string,
  cluster: string,
  heartbeatTtlMs = 2000,
): Promise<ClusterStatus> {
  const nc = await connect({ servers: natsUrl });
  try {
    const names = controlPlaneNames(cluster);
    const registry = await NodeRegistry.open(nc, names, { heartbeatTtlMs });
    const store = await PlacementStore.open(nc, names);
    const placement = await store.read();
    const expertMap = (await readExpertMap(store))?.record;
    const replicasByNode = new Map<string, number>();
    const expertLoadByNode = new Map<string, number>();
    const expertLoadTotal = expertMap?.loads.reduce((a, b) => a + b, 0) ?? 0;
    for (const [expert, holders] of Object.entries(expertMap?.experts ?? {})) {
      const load = expertMap!.loads[Number(expert)] ?? 0;
      holders.forEach((node, r) => {
        replicasByNode.set(node, (replicasByNode.get(node) ?? 0) + 1);
        const share = expertMap!.shares?.[expert]?.[r] ?? 1 / holders.length;
        expertLoadByNode.set(node, (expertLoadByNode.get(node) ?? 0) + load * share);
      });
    }
    const lease = await (await new Kvm(nc).create(names.leaderBucket, { history: 1 })).get("leader");
    const now = Date.now();
    const shardsByNode = new Map<string, number>();
    for (const node of Object.values(placement?.record.shards ?? {}))
      shardsByNode.set(node, (shardsByNode.get(node) ?? 0) + 1);
    const nodes = (await registry.all()).map((n) => ({
      id: n.id,
      endpoint: n.endpoint,
      alive: now - n.heartbeatAt <= heartbeatTtlMs,
      draining: n.draining,
      sessions: n.load.sessions,
      kvBytes: n.load.kvBytes,
      shards: shardsByNode.get(n.id) ?? 0,
      expertReplicas: replicasByNode.get(n.id) ?? 0,
      expertLoadShare: expertLoadTotal > 0 ? (expertLoadByNode.get(n.id) ?? 0) / expertLoadTotal : 0,
      expertMapVersion: n.load.expertMapVersion,
      heartbeatAgeMs: now - n.heartbeatAt,
    }));
    const counts = [...shardsByNode.values()];
    registry.close();
    const leaseRecord = lease && lease.operation === "PUT" ? lease.json<LeaseRecord>() : undefined;
    return {
      cluster,
      leader:
        leaseRecord && leaseRecord.expiresAt > now
          ? { holder: leaseRecord.holder, expiresInMs: leaseRecord.expiresAt - now }
          : undefined,
      placement: placement && {
        version: placement.record.version,
        fencingToken: placement.record.fencingToken,
        shardCount: placement.record.shardCount,
        maxOverMeanShards: counts.length
          ? Math.max(...counts) / (placement.record.shardCount / counts.length)
          : 0,
      },
      experts: expertMap && {
        version: expertMap.version,
        experts: Object.keys(expertMap.experts).length,
        replicas: [...replicasByNode.values()].reduce((a, b) => a + b, 0),
        maxMeanLoad: expertMap.maxMeanLoad,
      },
      nodes,
    };
  } finally {
    await nc.close();
  }
}

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
