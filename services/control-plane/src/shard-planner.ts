/**
 * KV-shard placement from membership: when the set of live, non-draining workers differs
 * from the workers the current map uses, the leader writes the next version (sticky
 * bounded-load consistent hashing, placement/shard-placement.ts: a dead or draining
 * worker's shards move, the others stay). Beside ExpertPlanner; the Controller only
 * decides when either runs.
 */
import type { NodeRecord, ShardMapRecord, ShardMapStore } from "@tandem/cluster";
import { placeShards } from "./placement/shard-placement.ts";

export interface ShardPlannerOptions {
  /** Virtual shards sessions hash into. @default 4096 */
  shardCount: number;
}

export class ShardPlanner {
  constructor(
    private readonly store: ShardMapStore,
    private readonly options: ShardPlannerOptions,
  ) {}

  /**
   * Writes the next map if membership changed (leader only, with its fencing token).
   * Resolves with the version written, or undefined when none was needed or another
   * writer won the compare-and-set.
   */
  async maybeReplan(
    alive: NodeRecord[],
    fencingToken: number,
    now = Date.now(),
  ): Promise<number | undefined> {
    const nodes = alive.filter((n) => !n.draining);
    const current = await this.store.read();
    const nodeIds = nodes.map((n) => n.id).sort();
    const currentIds = current ? [...new Set(Object.values(current.record.shards))].sort() : [];
    if (nodes.length === 0 || JSON.stringify(nodeIds) === JSON.stringify(currentIds)) return undefined;
    const previous = current
      ? new Map(Object.entries(current.record.shards).map(([shard, node]) => [Number(shard), node]))
      : undefined;
    const map = placeShards(
      this.options.shardCount,
      nodes.map((n) => ({ id: n.id, weight: n.weight })),
      previous,
    );
    const record: ShardMapRecord = {
      version: (current?.record.version ?? 0) + 1,
      fencingToken,
      shardCount: this.options.shardCount,
      shards: Object.fromEntries(map),
      endpoints: Object.fromEntries(nodes.map((n) => [n.id, n.endpoint])),
      writtenAt: now,
    };
    return (await this.store.write(record, current?.revision)) === undefined ? undefined : record.version;
  }
}
