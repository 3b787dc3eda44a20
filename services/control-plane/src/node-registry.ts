/**
 * Cluster membership in a JetStream KV bucket: each node puts its record (endpoint,
 * capacity, load) with a heartbeat timestamp; readers count a node alive while its last
 * heartbeat is within the TTL. NATS 2.9 ignores per-key TTLs, so liveness comes from the
 * timestamps, and the bucket's max age clears records of long-dead nodes.
 */
import type { NatsConnection } from "@nats-io/transport-node";
import { Kvm, type KV } from "@nats-io/kv";
import type { ControlPlaneNames } from "../../../shared/src/control-plane/control-plane-names.ts";

export interface NodeRecord {
  id: string;
  role: "cloud-worker";
  /** host:port of the node's gRPC service. */
  endpoint: string;
  /** Relative capacity for KV shards. */
  weight: number;
  /** Expert replicas the node's memory holds. */
  expertSlots: number;
  load: { sessions: number; kvBytes: number };
  /** Planned removal: the node takes no new shards and hands its shards away. */
  draining: boolean;
  heartbeatAt: number;
}

export interface NodeRegistryOptions {
  /** A node is dead when its last heartbeat is older than this. @default 3000 */
  heartbeatTtlMs?: number;
}

export class NodeRegistry {
  readonly heartbeatTtlMs: number;

  private constructor(
    readonly kv: KV,
    options: NodeRegistryOptions,
  ) {
    this.heartbeatTtlMs = options.heartbeatTtlMs ?? 3000;
  }

  static async open(
    nc: NatsConnection,
    names: ControlPlaneNames,
    options: NodeRegistryOptions = {},
  ): Promise<NodeRegistry> {
    const ttl = options.heartbeatTtlMs ?? 3000;
    const kv = await new Kvm(nc).create(names.nodesBucket, { history: 1, ttl: Math.max(60_000, ttl * 20) });
    return new NodeRegistry(kv, options);
  }

  async heartbeat(record: Omit<NodeRecord, "heartbeatAt">, now = Date.now()): Promise<void> {
    await this.kv.put(record.id, JSON.stringify({ ...record, heartbeatAt: now }));
  }

  async remove(id: string): Promise<void> {
    await this.kv.delete(id);
  }

  /** Every node record in the bucket, alive or not. */
  async all(): Promise<NodeRecord[]> {
    const records: NodeRecord[] = [];
    for await (const key of await this.kv.keys()) {
      const entry = await this.kv.get(key);
      if (entry && entry.operation === "PUT") records.push(entry.json<NodeRecord>());
    }
    return records.sort((a, b) => (a.id < b.id ? -1 : 1));
  }

  async alive(now = Date.now()): Promise<NodeRecord[]> {
    return (await this.all()).filter((n) => now - n.heartbeatAt <= this.heartbeatTtlMs);
  }
}
