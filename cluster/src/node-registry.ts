/**
 * Cluster membership in a JetStream KV bucket: each node puts its record (endpoint,
 * capacity, load) with a heartbeat timestamp; readers count a node alive while its last
 * heartbeat is within the TTL. NATS 2.9 ignores per-key TTLs, so liveness comes from the
 * timestamps, and the bucket's max age clears records of long-dead nodes.
 */
import type { NatsConnection } from "@nats-io/transport-node";
import type { KvEntry } from "@nats-io/kv";
import { z } from "zod";
import { CLUSTER_DEFAULTS, HOST_PORT_PATTERN } from "@tandem/common";
import type { ControlPlaneNames } from "./control-plane-names.ts";
import { KvBucket } from "./kv-bucket.ts";

const NODE_RECORD_SCHEMA = z.object({
  id: z.string().min(1).max(256),
  role: z.literal("cloud-worker"),
  /** host:port of the node's gRPC service. */
  endpoint: z.string().min(1),
  /** host:port of its tandem.v1.Experts service, for other workers only (expert parallelism). */
  expertEndpoint: z.string().regex(HOST_PORT_PATTERN).optional(),
  /** Relative capacity for KV shards. */
  weight: z.number().positive(),
  /** Expert replicas the node's memory holds. */
  expertSlots: z.int().min(0),
  /** Current load, and the version of the expert map the node has taken up (MoE). */
  load: z.object({
    sessions: z.int().min(0),
    kvBytes: z.number().min(0),
    expertMapVersion: z.int().min(0).optional(),
    /**
     * MoE with expert parallelism: the experts the node has loaded, by expert-map id
     * ((layer − split)·experts + expert) — what it holds, beside what the map assigns it.
     */
    heldExperts: z
      .array(z.int().min(0))
      .max(1 << 16)
      .optional(),
  }),
  /** Planned removal: the node takes no new shards and hands its shards away. */
  draining: z.boolean(),
  heartbeatAt: z.number(),
});
export type NodeRecord = z.output<typeof NODE_RECORD_SCHEMA>;

/** How far ahead of a reader's clock a heartbeat may be and still count (clocks in a cluster drift a little). */
export const MAX_CLOCK_SKEW_MS = 5000;

export interface NodeRegistryOptions {
  /** A node is dead when its last heartbeat is older than this. @default CLUSTER_DEFAULTS.heartbeatTtlMs */
  heartbeatTtlMs?: number;
}

/** Opens (creating when needed) the nodes bucket; its max age clears long-dead nodes' records. */
function openNodesBucket(
  nc: NatsConnection,
  names: ControlPlaneNames,
  heartbeatTtlMs: number,
): Promise<KvBucket> {
  return KvBucket.open(nc, {
    name: names.nodesBucket,
    history: 1,
    ttlMs: Math.max(60_000, heartbeatTtlMs * 20),
  });
}

/**
 * A node's own side of membership: it puts its record and removes it, and reads nobody's
 * (a worker need not watch and parse every other worker's heartbeats).
 */
export class NodeRecordWriter {
  protected constructor(protected readonly store: KvBucket) {}

  static async open(
    nc: NatsConnection,
    names: ControlPlaneNames,
    options: NodeRegistryOptions = {},
  ): Promise<NodeRecordWriter> {
    const ttl = options.heartbeatTtlMs ?? CLUSTER_DEFAULTS.heartbeatTtlMs;
    return new NodeRecordWriter(await openNodesBucket(nc, names, ttl));
  }

  /**
   * Puts the record with a heartbeat of now. A put tried again (its acknowledgement lost,
   * as when NATS restarts) is stamped anew: the first try may have landed already, and the
   * retry lands after every heartbeat put meanwhile, so an old stamp would take the node
   * back in time and make a live node look dead. `now` fixes the stamp (for tests).
   */
  async heartbeat(record: Omit<NodeRecord, "heartbeatAt">, now?: number): Promise<void> {
    await this.store.run((kv) =>
      kv.put(record.id, JSON.stringify({ ...record, heartbeatAt: now ?? Date.now() })),
    );
  }

  async remove(id: string): Promise<void> {
    await this.store.run((kv) => kv.delete(id));
  }
}

/** Membership as the leader and `tandem status` read it: every node's latest record, kept by a watch. */
export class NodeRegistry extends NodeRecordWriter {
  readonly heartbeatTtlMs: number;
  /** Latest record per node, kept current by a watch on the bucket. */
  private readonly records = new Map<string, NodeRecord>();
  private stopWatch: () => void = () => undefined;
  /** The nodes alive when aliveConfirmed last saw heartbeats landing. */
  private lastFlowing?: NodeRecord[];
  /** Nodes read from the bucket and found dead, with the heartbeat they stopped at. */
  private readonly confirmedDead = new Map<string, number>();

  private constructor(store: KvBucket, heartbeatTtlMs: number) {
    super(store);
    this.heartbeatTtlMs = heartbeatTtlMs;
  }

  /**
   * Opens the bucket and starts watching it. Reading membership from the watch, not by
   * listing keys, keeps reads instant: a key listing under a stream of heartbeats can take
   * seconds to settle, and the leader reads membership every tick.
   */
  static override async open(
    nc: NatsConnection,
    names: ControlPlaneNames,
    options: NodeRegistryOptions = {},
  ): Promise<NodeRegistry> {
    const ttl = options.heartbeatTtlMs ?? CLUSTER_DEFAULTS.heartbeatTtlMs;
    const store = await openNodesBucket(nc, names, ttl);
    const registry = new NodeRegistry(store, ttl);
    const existing = (await store.kv.status()).values;
    let markReady: () => void = () => undefined;
    const ready = new Promise<void>((resolve) => (markReady = resolve));
    if (existing === 0) markReady();
    // A watch started again (NATS lost its storage) delivers the current records anew.
    const watch = await store.watch(undefined, (entry) => {
      // A record that fails the schema (a bug, or a hostile write) counts as no record:
      // that node is not a member until it writes a valid one.
      const record = entry.operation === "PUT" ? decodeNodeRecord(entry) : undefined;
      if (record && record.id === entry.key) registry.records.set(entry.key, record);
      else registry.records.delete(entry.key);
      // delta is what is still pending of the initial values: 0 means they are all in.
      if (entry.delta === 0) markReady();
    });
    registry.stopWatch = () => watch.stop();
    await Promise.race([ready, new Promise((resolve) => setTimeout(resolve, 2000))]);
    return registry;
  }

  /** Every node record in the bucket, alive or not. */
  all(): NodeRecord[] {
    return [...this.records.values()].sort((a, b) => (a.id < b.id ? -1 : 1));
  }

  /**
   * Nodes whose last heartbeat is within the TTL. A heartbeat from further in the future
   * than MAX_CLOCK_SKEW_MS is not believed (a bad clock, or a forged record that would
   * otherwise stay alive for ever and be given shards).
   */
  alive(now = Date.now()): NodeRecord[] {
    return this.all().filter(
      (n) => now - n.heartbeatAt <= this.heartbeatTtlMs && n.heartbeatAt - now <= MAX_CLOCK_SKEW_MS,
    );
  }

  /**
   * Membership as a leader should act on it: the nodes alive, with two guards against
   * taking a live node for dead when it is NATS that failed.
   *
   * - Each node that looks dead in the watch's view (for less than RECHECK_DEAD_MS) is read
   *   again, straight from the bucket: when a NATS server dies, a watch can lag for
   *   seconds (until KvBucket.watch notices and starts it again) while heartbeats still
   *   land. A read that fails throws: better no decision than one made blind.
   * - While no node's heartbeat is younger than half the TTL, heartbeats are not landing
   *   at all (the bucket's stream is electing a leader, say): the nodes alive at the last
   *   call that saw heartbeats land are returned as they were, for up to RECHECK_DEAD_MS.
   *   A node dies alone; when all fall silent together, the silence is NATS's. (Nodes beat
   *   every quarter TTL by default.)
   */
  async aliveConfirmed(now = Date.now()): Promise<NodeRecord[]> {
    const looksDead = this.all().filter(
      (n) =>
        now - n.heartbeatAt > this.heartbeatTtlMs &&
        now - n.heartbeatAt <= RECHECK_DEAD_MS &&
        this.confirmedDead.get(n.id) !== n.heartbeatAt,
    );
    await Promise.all(
      looksDead.map(async (node) => {
        const entry = await this.store.run((kv) => kv.get(node.id));
        const record = entry?.operation === "PUT" ? decodeNodeRecord(entry) : undefined;
        if (record && record.id === node.id && record.heartbeatAt > node.heartbeatAt)
          this.records.set(node.id, record);
        // Read once per heartbeat it stopped at: a dead node is not read again every tick.
        else this.confirmedDead.set(node.id, node.heartbeatAt);
      }),
    );
    // A heartbeat from the future says nothing about whether heartbeats land now.
    const believable = this.all().filter((n) => n.heartbeatAt - now <= MAX_CLOCK_SKEW_MS);
    const freshest = Math.max(...believable.map((n) => n.heartbeatAt));
    const silentFor = now - freshest;
    // Silence of every node for longer than the recheck window is no NATS hiccup: they are
    // gone (a zone lost, the only worker dead), and membership follows the records again.
    if (this.lastFlowing && silentFor > this.heartbeatTtlMs / 2 && silentFor <= RECHECK_DEAD_MS)
      return this.lastFlowing;
    this.lastFlowing = this.alive(now);
    return this.lastFlowing;
  }

  close(): void {
    this.stopWatch();
  }
}

/** How long after its last heartbeat a node that looks dead is still read again before counting so. */
export const RECHECK_DEAD_MS = 30_000;

function decodeNodeRecord(entry: KvEntry): NodeRecord | undefined {
  try {
    const parsed = NODE_RECORD_SCHEMA.safeParse(entry.json());
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined; // not JSON
  }
}
