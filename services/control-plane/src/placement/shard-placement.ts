/**
 * Placement of KV-cache shards on cloud workers. Sessions hash into a fixed number of
 * virtual shards; shards map to workers by consistent hashing with bounded loads
 * (Mirrokni, Thorup, Zadimoghaddam), weighted by capacity. Re-placing after a change
 * first keeps every shard whose worker is alive and not above its fair share, so a lost
 * worker moves exactly its own shards and a new worker takes about its fair share.
 * Pure and deterministic: same inputs, same map.
 */

import { hash32 } from "@tandem/cluster";
import { InvalidArgumentError } from "@tandem/common";

export interface ShardNode {
  id: string;
  /** Relative capacity (e.g. KV memory); a node of weight 2 gets twice the shards. */
  weight: number;
}

export interface ShardPlacementOptions {
  /** Load bound as a multiple of the fair share (the "c" of bounded-load hashing). @default 1.25 */
  loadFactor?: number;
  /** Ring points per unit of weight. @default 64 */
  pointsPerWeight?: number;
}

interface Ring {
  points: Uint32Array;
  owners: number[];
}

function buildRing(nodes: ShardNode[], pointsPerWeight: number): Ring {
  const entries: { point: number; owner: number }[] = [];
  nodes.forEach((node, index) => {
    const count = Math.max(1, Math.round(node.weight * pointsPerWeight));
    for (let v = 0; v < count; v++) entries.push({ point: hash32(`node:${node.id}#${v}`), owner: index });
  });
  entries.sort((a, b) => a.point - b.point || a.owner - b.owner);
  return { points: Uint32Array.from(entries.map((e) => e.point)), owners: entries.map((e) => e.owner) };
}

/** First ring index at or after `point` (wrapping). */
function ringStart(ring: Ring, point: number): number {
  let lo = 0;
  let hi = ring.points.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (ring.points[mid] < point) lo = mid + 1;
    else hi = mid;
  }
  return lo % ring.points.length;
}

/** The first node at or after `point` on the ring that `accept`s, if any. */
function walk(ring: Ring, point: number, accept: (owner: number) => boolean): number | undefined {
  let position = ringStart(ring, point);
  for (let step = 0; step < ring.points.length; step++) {
    if (accept(ring.owners[position])) return ring.owners[position];
    position = (position + 1) % ring.points.length;
  }
  return undefined;
}

/**
 * Maps shards 0..shardCount-1 to node ids. `previous` (shard → node id) makes the map
 * sticky: a shard stays where it was while its node is alive and within its fair share.
 */
export function placeShards(
  shardCount: number,
  nodes: ShardNode[],
  previous?: ReadonlyMap<number, string>,
  options: ShardPlacementOptions = {},
): Map<number, string> {
  if (nodes.length === 0) throw new InvalidArgumentError("nodes", "placeShards needs at least one node");
  const sorted = [...nodes].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const totalWeight = sorted.reduce((sum, n) => sum + n.weight, 0);
  const loadFactor = options.loadFactor ?? 1.25;
  const fair = sorted.map((n) => (shardCount * n.weight) / totalWeight);
  const share = fair.map((f) => Math.ceil(f));
  const bound = fair.map((f) => Math.max(1, Math.ceil(f * loadFactor)));
  const index = new Map(sorted.map((n, i) => [n.id, i]));
  const load = new Array<number>(sorted.length).fill(0);
  const result = new Map<number, string>();
  const order = Array.from({ length: shardCount }, (_, s) => s).sort(
    (a, b) => hash32(`shard:${a}`) - hash32(`shard:${b}`) || a - b,
  );

  const ring = buildRing(sorted, options.pointsPerWeight ?? 64);
  const preferred = (shard: number) => ring.owners[ringStart(ring, hash32(`shard:${shard}`))];

  // 1. Sticky: a shard stays on its alive node while the node is within its bound, so a
  //    lost node moves only its own shards.
  if (previous) {
    for (const shard of order) {
      const owner = previous.get(shard);
      const i = owner === undefined ? undefined : index.get(owner);
      if (i !== undefined && load[i] < bound[i]) {
        result.set(shard, sorted[i].id);
        load[i]++;
      }
    }
  }
  // 2. Unplaced shards walk the ring: first to a node under its fair share, else to one
  //    under its bound.
  for (const shard of order) {
    if (result.has(shard)) continue;
    const owner =
      walk(ring, hash32(`shard:${shard}`), (i) => load[i] < share[i]) ??
      walk(ring, hash32(`shard:${shard}`), (i) => load[i] < bound[i]);
    if (owner === undefined)
      throw new InvalidArgumentError("loadFactor", "leaves no node under its bound (too small)");
    result.set(shard, sorted[owner].id);
    load[owner]++;
  }
  // 3. Fill nodes far under their share (a node that just joined) from nodes over theirs,
  //    taking first the shards the ring would give the new node anyway.
  //    Nodes that held shards before are left as they are: moving shards to them is not
  //    needed for correctness, and only the must-move shards should move.
  const previousOwners = new Set(previous?.values() ?? []);
  for (let u = 0; u < sorted.length; u++) {
    const target = Math.floor(fair[u]);
    if (load[u] >= target || previousOwners.has(sorted[u].id)) continue;
    // Donors: first nodes over their rounded-up share, then any over their exact share.
    const tiers: [boolean, (v: number) => boolean][] = [
      [true, (v) => load[v] > share[v]],
      [false, (v) => load[v] > share[v]],
      [true, (v) => load[v] > fair[v]],
      [false, (v) => load[v] > fair[v]],
    ];
    for (const [ringFirst, donor] of tiers) {
      for (const shard of order) {
        if (load[u] >= target) break;
        const v = index.get(result.get(shard)!)!;
        if (v === u || !donor(v)) continue;
        if (ringFirst && preferred(shard) !== u) continue;
        result.set(shard, sorted[u].id);
        load[v]--;
        load[u]++;
      }
    }
  }
  return result;
}

/** Shards whose node differs between two maps. */
export function shardMoves(before: ReadonlyMap<number, string>, after: ReadonlyMap<number, string>): number {
  let moves = 0;
  for (const [shard, node] of after) if (before.get(shard) !== node) moves++;
  return moves;
}
