/**
 * The versioned KV-shard placement map in a KV bucket. The leader writes version n+1 by
 * compare-and-set on the revision it read, stamping its lease's fencing token; watchers
 * (workers, edge agents) take a map only if its version and fencing token are not older
 * than what they hold, so a deposed leader's late write is ignored.
 */
import type { NatsConnection } from "@nats-io/transport-node";
import { Kvm, type KV } from "@nats-io/kv";
import type { ControlPlaneNames } from "./control-plane-names.ts";
import { sessionShard } from "./session-shard.ts";

export interface ShardMapRecord {
  version: number;
  /** Lease revision of the leader that wrote it. */
  fencingToken: number;
  shardCount: number;
  /** shard → node id. */
  shards: Record<string, string>;
  /** node id → endpoint, for clients that only read the map. */
  endpoints: Record<string, string>;
  writtenAt: number;
}

const KEY = "kv-shards";

export class PlacementStore {
  private constructor(readonly kv: KV) {}

  static async open(nc: NatsConnection, names: ControlPlaneNames): Promise<PlacementStore> {
    return new PlacementStore(await new Kvm(nc).create(names.placementBucket, { history: 10 }));
  }

  async read(): Promise<{ record: ShardMapRecord; revision: number } | undefined> {
    const entry = await this.kv.get(KEY);
    if (!entry || entry.operation !== "PUT") return undefined;
    return { record: entry.json<ShardMapRecord>(), revision: entry.revision };
  }

  /** Writes the next version; fails (returns false) if someone wrote since `revision`. */
  async write(record: ShardMapRecord, revision: number | undefined): Promise<boolean> {
    try {
      if (revision === undefined) await this.kv.create(KEY, JSON.stringify(record));
      else await this.kv.update(KEY, JSON.stringify(record), revision);
      return true;
    } catch {
      return false;
    }
  }

  /** Calls `onMap` with every newer map, starting with the current one. */
  watch(onMap: (record: ShardMapRecord) => void): Promise<{ stop(): void }> {
    return watchVersioned(this.kv, KEY, onMap);
  }
}

/** The worker that owns a session's KV shard under a map. */
export function ownerOf(
  record: ShardMapRecord,
  sessionId: string,
): { nodeId: string; endpoint: string } | undefined {
  const nodeId = record.shards[String(sessionShard(sessionId, record.shardCount))];
  return nodeId ? { nodeId, endpoint: record.endpoints[nodeId] } : undefined;
}

/** The expert placement map, versioned like the shard map. */
export interface ExpertMapRecord {
  version: number;
  fencingToken: number;
  /** expert → node ids holding a replica. */
  experts: Record<string, string[]>;
  /**
   * expert → share of its tokens each replica takes, aligned with `experts`; sums to 1.
   * A router picks a replica with these weights (absent in maps from older leaders: even).
   */
  shares?: Record<string, number[]>;
  /** The activation counts of the window it was planned from. */
  loads: number[];
  /** Expected max/mean worker load under those counts. */
  maxMeanLoad: number;
  writtenAt: number;
}

const EXPERTS_KEY = "experts";

/**
 * What a worker publishes on its load subject every heartbeat: its sessions and KV bytes,
 * and the activation counts per expert since its last report (empty for a dense model).
 */
export interface ExpertLoadReport {
  nodeId: string;
  counts: number[];
  sessions?: number;
  kvBytes?: number;
}

export async function readExpertMap(
  store: PlacementStore,
): Promise<{ record: ExpertMapRecord; revision: number } | undefined> {
  const entry = await store.kv.get(EXPERTS_KEY);
  if (!entry || entry.operation !== "PUT") return undefined;
  return { record: entry.json<ExpertMapRecord>(), revision: entry.revision };
}

/** Calls `onMap` with every newer expert map (same ordering rule as the shard map's watch). */
export function watchExpertMap(
  store: PlacementStore,
  onMap: (record: ExpertMapRecord) => void,
): Promise<{ stop(): void }> {
  return watchVersioned(store.kv, EXPERTS_KEY, onMap);
}

/**
 * Watches a versioned map under `key`, calling `onMap` with each map newer than the last
 * one taken: a higher version, never an older fencing token (a deposed leader's late write).
 */
async function watchVersioned<R extends { version: number; fencingToken: number }>(
  kv: KV,
  key: string,
  onMap: (record: R) => void,
): Promise<{ stop(): void }> {
  const iterator = await kv.watch({ key });
  let latest: R | undefined;
  void (async () => {
    for await (const entry of iterator) {
      if (entry.operation !== "PUT") continue;
      const record = entry.json<R>();
      if (latest && (record.version <= latest.version || record.fencingToken < latest.fencingToken)) continue;
      latest = record;
      onMap(record);
    }
  })();
  return { stop: () => iterator.stop() };
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

export async function writeExpertMap(
  store: PlacementStore,
  record: ExpertMapRecord,
  revision: number | undefined,
): Promise<boolean> {
  try {
    if (revision === undefined) await store.kv.create(EXPERTS_KEY, JSON.stringify(record));
    else await store.kv.update(EXPERTS_KEY, JSON.stringify(record), revision);
    return true;
  } catch {
    return false;
  }
}
