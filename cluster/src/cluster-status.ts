/** The cluster as the control plane sees it — nodes, leader, placement and balance — read from NATS. */
import { CLUSTER_DEFAULTS } from "@tandem/common";
import { controlPlaneNames } from "./control-plane-names.ts";
import { connectNats, type NatsCredentials } from "./nats-connection.ts";
import { openLease } from "./lease-record.ts";
import { NodeRegistry } from "./node-registry.ts";
import { expertsOf, openExpertMap, openShardMap } from "./placement-map.ts";

export interface ClusterStatus {
  cluster: string;
  leader?: { holder: string; expiresInMs: number };
  placement?: { version: number; fencingToken: number; shardCount: number; maxOverMeanShards: number };
  /** MoE clusters: the expert map's version and its expected max/mean worker load. */
  experts?: { version: number; experts: number; replicas: number; maxMeanLoad: number };
  nodes: {
    id: string;
    endpoint: string;
    /** Its Experts service (expert parallelism), where it has one. */
    expertEndpoint?: string;
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
    /** Experts the node reports having loaded (expert parallelism); undefined when it does not say. */
    expertsHeld?: number;
    heartbeatAgeMs: number;
  }[];
}

export async function clusterStatus(
  natsUrl: string,
  cluster: string,
  heartbeatTtlMs: number = CLUSTER_DEFAULTS.heartbeatTtlMs,
  credentials?: NatsCredentials,
): Promise<ClusterStatus> {
  const nc = await connectNats(natsUrl, { reconnect: false, name: "tandem status", credentials });
  try {
    const names = controlPlaneNames(cluster);
    const registry = await NodeRegistry.open(nc, names, { heartbeatTtlMs });
    const placement = await (await openShardMap(nc, names)).read();
    const expertMap = (await (await openExpertMap(nc, names)).read())?.record;
    const expertLoadTotal = expertMap?.loads.reduce((a, b) => a + b, 0) ?? 0;
    const leaseRecord = (await (await openLease(nc, names)).read())?.record;
    const now = Date.now();
    const shardsByNode = new Map<string, number>();
    for (const node of Object.values(placement?.record.shards ?? {}))
      shardsByNode.set(node, (shardsByNode.get(node) ?? 0) + 1);
    const alive = new Set(registry.alive(now).map((n) => n.id));
    const nodes = registry.all().map((n) => {
      const held = expertMap ? expertsOf(expertMap, n.id) : new Map<number, number>();
      const expertLoad = [...held].reduce(
        (sum, [expert, share]) => sum + (expertMap?.loads[expert] ?? 0) * share,
        0,
      );
      return {
        id: n.id,
        endpoint: n.endpoint,
        expertEndpoint: n.expertEndpoint,
        alive: alive.has(n.id),
        draining: n.draining,
        sessions: n.load.sessions,
        kvBytes: n.load.kvBytes,
        shards: shardsByNode.get(n.id) ?? 0,
        expertReplicas: held.size,
        expertLoadShare: expertLoadTotal > 0 ? expertLoad / expertLoadTotal : 0,
        expertMapVersion: n.load.expertMapVersion,
        expertsHeld: n.load.heldExperts?.length,
        heartbeatAgeMs: now - n.heartbeatAt,
      };
    });
    const counts = [...shardsByNode.values()];
    registry.close();
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
        replicas: Object.values(expertMap.experts).reduce((sum, holders) => sum + holders.length, 0),
        maxMeanLoad: expertMap.maxMeanLoad,
      },
      nodes,
    };
  } finally {
    await nc.close();
  }
}
