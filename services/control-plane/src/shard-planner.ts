/**
 * KV-shard placement from membership: when the set of live, non-draining workers differs
 * from the workers the current map names, the leader writes the next version (sticky
 * bounded-load consistent hashing, placement/shard-placement.ts: a dead or draining
 * worker's shards move, the others stay). Beside ExpertPlanner; the Controller only
 * decides when either runs.
 */
import { nextVersion, type NodeRecord, type ShardMapRecord, type ShardMapStore } from "@tandem/cluster";
import type { Logger } from "@tandem/common";
import { placeShards } from "./placement/shard-placement.ts";

export interface ShardPlannerOptions {
  /** Virtual shards sessions hash into. */
  shardCount: number;
}

export class ShardPlanner {
  /** Version of the map as last read or written (leader only): for the metrics. */
  version?: number;

  constructor(
    private readonly store: ShardMapStore,
    private readonly options: ShardPlannerOptions,
    private readonly log?: Logger,
  ) {}

  /**
   * Writes the next map if membership or a member's endpoint changed (leader only, with
   * its fencing token).
   * Resolves with the version written, or undefined when none was needed or another
   * writer won the compare-and-set.
   */
  async maybeReplan(alive: NodeRecord[], fencingToken: number): Promise<number | undefined> {
    const nodes = alive.filter((n) => !n.draining);
    const current = await this.store.readForUpdate((error) =>
      this.log?.warn({ err: error.message }, "invalid shard map: placing shards afresh over it"),
    );
    // A map that fails its schema counts as no map: it is planned afresh and overwritten.
    const previousMap = current?.record;
    this.version = previousMap?.version;
    // The map's members are its endpoints (with more workers than shards, some hold none).
    // A worker back under the same id at a new address changes the map too: clients route
    // by the endpoints it names.
    const members = nodes.map((n) => `${n.id} ${n.endpoint}`).sort();
    const mapMembers = Object.entries(previousMap?.endpoints ?? {})
      .map(([id, endpoint]) => `${id} ${endpoint}`)
      .sort();
    if (nodes.length === 0 || JSON.stringify(members) === JSON.stringify(mapMembers)) return undefined;
    const previous = previousMap
      ? new Map(Object.entries(previousMap.shards).map(([shard, node]) => [Number(shard), node]))
      : undefined;
    const map = placeShards(
      this.options.shardCount,
      nodes.map((n) => ({ id: n.id, weight: n.weight })),
      previous,
    );
    const record: ShardMapRecord = {
      ...nextVersion(current),
      fencingToken,
      shardCount: this.options.shardCount,
      shards: Object.fromEntries(map),
      endpoints: Object.fromEntries(nodes.map((n) => [n.id, n.endpoint])),
      writtenAt: Date.now(),
    };
    if ((await this.store.write(record, current?.revision)) === undefined) return undefined;
    this.version = record.version;
    return record.version;
  }
}
