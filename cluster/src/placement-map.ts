/**
 * The versioned placement maps in the cluster's placement bucket: the KV-shard map (which
 * worker holds each session's KV) and the expert map (which workers hold each MoE
 * expert, and the share of its tokens each replica takes). The leader writes version
 * n+1 by compare-and-set on the revision it read, stamping its lease's fencing token;
 * watchers (workers, edge agents) take a map only if its version and fencing token are
 * not older than what they hold (watchVersioned), so a deposed leader's late write is
 * ignored, and a value that fails the schema is skipped.
 */
import type { NatsConnection } from "@nats-io/transport-node";
import { z } from "zod";
import { HOST_PORT_PATTERN } from "@tandem/common";
import type { ControlPlaneNames } from "./control-plane-names.ts";
import { KvRecord } from "./kv-record.ts";
import { sessionShard } from "./session-shard.ts";

const nodeId = z.string().min(1).max(256);

const SHARD_MAP_SCHEMA = z.object({
  version: z.int().min(1),
  /** Lease revision of the leader that wrote it. */
  fencingToken: z.int().min(0),
  /** The map's history (see VersionedRecord); "" in maps from before epochs. */
  epoch: z.string().max(64).default(""),
  shardCount: z.int().min(1),
  /** shard → node id. */
  shards: z.record(z.string().regex(/^\d+$/), nodeId),
  /** node id → endpoint, for clients that only read the map. */
  endpoints: z.record(nodeId, z.string().min(1)),
  writtenAt: z.number(),
});
export type ShardMapRecord = z.output<typeof SHARD_MAP_SCHEMA>;

const EXPERT_MAP_SCHEMA = z.object({
  version: z.int().min(1),
  fencingToken: z.int().min(0),
  epoch: z.string().max(64).default(""),
  /** expert → node ids holding a replica. */
  experts: z.record(z.string().regex(/^\d+$/), z.array(nodeId)),
  /**
   * expert → share of its tokens each replica takes, aligned with `experts`; sums to 1.
   * A router picks a replica with these weights (absent in maps from older leaders: even).
   */
  shares: z.record(z.string().regex(/^\d+$/), z.array(z.number().min(0).max(1))).optional(),
  /** node id → its Experts service, for workers that call other workers' experts (absent in older maps). */
  endpoints: z.record(nodeId, z.string().regex(HOST_PORT_PATTERN)).optional(),
  /** The activation counts of the window it was planned from. */
  loads: z.array(z.number().min(0)),
  /** Expected max/mean worker load under those counts. */
  maxMeanLoad: z.number(),
  writtenAt: z.number(),
});
export type ExpertMapRecord = z.output<typeof EXPERT_MAP_SCHEMA>;

/**
 * What a worker publishes on its load subject every heartbeat: its sessions and KV bytes,
 * and the activation counts per expert since its last report (empty for a dense model).
 */
export const EXPERT_LOAD_REPORT_SCHEMA = z.object({
  nodeId,
  counts: z.array(z.number().min(0)),
  sessions: z.int().min(0).optional(),
  kvBytes: z.number().min(0).optional(),
});
export type ExpertLoadReport = z.output<typeof EXPERT_LOAD_REPORT_SCHEMA>;

const SHARD_MAP_KEY = "kv-shards";
const EXPERT_MAP_KEY = "experts";

export type ShardMapStore = KvRecord<typeof SHARD_MAP_SCHEMA>;
export type ExpertMapStore = KvRecord<typeof EXPERT_MAP_SCHEMA>;

export function openShardMap(nc: NatsConnection, names: ControlPlaneNames): Promise<ShardMapStore> {
  return KvRecord.open(nc, { bucket: names.placementBucket, key: SHARD_MAP_KEY, schema: SHARD_MAP_SCHEMA });
}

export function openExpertMap(nc: NatsConnection, names: ControlPlaneNames): Promise<ExpertMapStore> {
  return KvRecord.open(nc, { bucket: names.placementBucket, key: EXPERT_MAP_KEY, schema: EXPERT_MAP_SCHEMA });
}

/** The worker that owns a session's KV shard under a map. */
export function ownerOf(
  record: ShardMapRecord,
  sessionId: string,
): { nodeId: string; endpoint: string } | undefined {
  const owner = record.shards[String(sessionShard(sessionId, record.shardCount))];
  const endpoint = owner === undefined ? undefined : record.endpoints[owner];
  return owner !== undefined && endpoint !== undefined ? { nodeId: owner, endpoint } : undefined;
}

/** The replicas of an expert under a map, each with its node's endpoint and share; [] when none. */
export function replicasOf(
  record: ExpertMapRecord,
  expert: number,
): { nodeId: string; endpoint?: string; share: number }[] {
  const holders = record.experts[String(expert)] ?? [];
  return holders.map((nodeId, row) => ({
    nodeId,
    endpoint: record.endpoints?.[nodeId],
    share: record.shares?.[String(expert)]?.[row] ?? 1 / holders.length,
  }));
}

/** The replicas a node holds under an expert map: expert id → its share of that expert's tokens. */
export function expertsOf(record: ExpertMapRecord, nodeId: string): Map<number, number> {
  const held = new Map<number, number>();
  for (const [expert, holders] of Object.entries(record.experts)) {
    const row = holders.indexOf(nodeId);
    if (row >= 0) held.set(Number(expert), record.shares?.[expert]?.[row] ?? 1 / holders.length);
  }
  return held;
}
