/**
 * Benchmark `placement`: quality and speed of the pure placement algorithms.
 *   Experts: 64 and 256 experts on 8, 64 and 256 workers, under Zipf-skewed and shifting
 *   activation traces; max/mean worker load (1.0 is perfect) with one redundant replica
 *   per worker and split routing (replica shares), against EPLB's even split (and its
 *   lower bound) and the greedy baseline (one replica each, least-loaded worker);
 *   replicas moved per re-plan; planning time.
 *   KV shards: spread of shards per worker, and shards moved when one worker is lost,
 *   against the minimum (the lost worker's own shards).
 *   Failover, live on a nats-server of its own: time from a worker's last heartbeat to a
 *   map without it, and from killing the leader's process to another replica leading.
 * Usage: tandem bench placement [--smoke]
 */
import {
  type ExpertPlan,
  type ExpertWorker,
  greedyBaseline,
  maxMeanLowerBound,
  nextExpertPlan,
  placeExperts,
  placementQuality,
  placeShards,
  planExperts,
  replicaMoves,
  shardMoves,
  type ShardNode,
} from "@tandem/control-plane";
import type { BenchOptions, BenchResult } from "./bench-types.ts";
import { failoverTiming } from "./failover-timing.ts";
import { seededRandom } from "./seeded-random.ts";

/** Activation counts of one window: Zipf(s) over a permutation of the experts, with sampling noise. */
function zipfWindow(
  experts: number,
  s: number,
  permutation: number[],
  random: () => number,
  tokens = 100_000,
): number[] {
  const weights = permutation.map((_, rank) => 1 / Math.pow(rank + 1, s));
  const total = weights.reduce((a, b) => a + b, 0);
  const loads = new Array<number>(experts).fill(0);
  permutation.forEach((expert, rank) => {
    const mean = (tokens * weights[rank]) / total;
    loads[expert] = Math.max(0, Math.round(mean + Math.sqrt(mean) * (random() - 0.5) * 3.46));
  });
  return loads;
}

function shuffle(n: number, random: () => number): number[] {
  const a = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

export default async function placementBenchmark(options: BenchOptions<"placement">): Promise<BenchResult> {
  const expertCounts = options.smoke ? [64] : [64, 256];
  const workerCounts = options.smoke ? [8] : [8, 64, 256];
  const windows = options.smoke ? 3 : 8;
  const rows = [];
  let worst = 0;
  let worstEven = 0;
  let worstFresh = 0;
  let time256 = 0;
  for (const experts of expertCounts) {
    for (const workerCount of workerCounts) {
      const replicas = experts + workerCount;
      const slots = Math.ceil((2 * replicas) / workerCount);
      const workers: ExpertWorker[] = Array.from({ length: workerCount }, (_, i) => ({
        id: `w${String(i).padStart(3, "0")}`,
        slots,
      }));
      const ids = workers.map((w) => w.id);
      for (const trace of ["zipf", "shifting"] as const) {
        const random = seededRandom(experts * 1000 + workerCount + (trace === "zipf" ? 0 : 7));
        let permutation = shuffle(experts, random);
        let current: ExpertPlan | undefined;
        let maxMean = 0;
        let evenMaxMean = 0;
        let freshMaxMean = 0;
        let evenBound = 1;
        let greedyMaxMean = 0;
        let moves = 0;
        let replans = 0;
        let reshares = 0;
        let ms = 0;
        for (let w = 0; w < windows; w++) {
          // Shifting: each window half of the hot ranks trade places.
          if (trace === "shifting" && w > 0) {
            const next = [...permutation];
            for (let k = 0; k < Math.max(2, experts / 8); k += 2)
              [next[k], next[k + 1 + Math.floor(random() * 8)]] = [
                next[k + 1 + Math.floor(random() * 8)] ?? next[k],
                next[k],
              ];
            permutation = next;
          }
          const loads = zipfWindow(experts, 1.1, permutation, random);
          const start = performance.now();
          const decision = nextExpertPlan(loads, workers, current);
          ms = Math.max(ms, performance.now() - start);
          if (current && decision.change === "replicas")
            moves += replicaMoves(current.placement, decision.plan.placement);
          if (decision.change === "shares") reshares++;
          current = decision.plan;
          if (w > 0) replans++;
          maxMean = Math.max(maxMean, decision.plan.maxMeanLoad);
          // The plan itself, before hysteresis holds an older one.
          freshMaxMean = Math.max(freshMaxMean, planExperts(loads, workers, undefined).maxMeanLoad);
          // EPLB as published (even split over replicas), for comparison, and its bound.
          evenMaxMean = Math.max(
            evenMaxMean,
            placementQuality(loads, placeExperts(loads, workers), ids).maxMeanLoad,
          );
          evenBound = Math.max(evenBound, maxMeanLowerBound(loads, workerCount));
          greedyMaxMean = Math.max(
            greedyMaxMean,
            placementQuality(loads, greedyBaseline(loads, workers), ids).maxMeanLoad,
          );
        }
        worst = Math.max(worst, maxMean);
        worstEven = Math.max(worstEven, evenMaxMean);
        worstFresh = Math.max(worstFresh, freshMaxMean);
        if (experts === 256 && workerCount === 256) time256 = Math.max(time256, ms);
        rows.push({
          experts,
          workers: workerCount,
          trace,
          slots_per_worker: slots,
          max_mean_load: maxMean,
          fresh_plan_max_mean_load: freshMaxMean,
          eplb_even_split_max_mean_load: evenMaxMean,
          eplb_even_split_lower_bound: evenBound,
          greedy_max_mean_load: greedyMaxMean,
          replicas_moved_per_replan: replans ? moves / replans : 0,
          share_only_updates: reshares,
          replicas_total: replicas,
          placement_ms: ms,
        });
        process.stderr.write(`placement bench: ${JSON.stringify(rows[rows.length - 1])}\n`);
      }
    }
  }

  const shardRows = [];
  let worstMovesRatio = 0;
  for (const workerCount of options.smoke ? [8] : [8, 64, 256]) {
    const shards = 4096;
    const nodes: ShardNode[] = Array.from({ length: workerCount }, (_, i) => ({
      id: `w${String(i).padStart(3, "0")}`,
      weight: i % 4 === 0 ? 2 : 1,
    }));
    const start = performance.now();
    const before = placeShards(shards, nodes);
    const placeMs = performance.now() - start;
    const perNode = new Map<string, number>();
    for (const node of before.values()) perNode.set(node, (perNode.get(node) ?? 0) + 1);
    const totalWeight = nodes.reduce((a, n) => a + n.weight, 0);
    const spread = nodes.map((n) => (perNode.get(n.id) ?? 0) / ((shards * n.weight) / totalWeight));
    const lost = nodes[Math.floor(workerCount / 3)];
    const after = placeShards(
      shards,
      nodes.filter((n) => n !== lost),
      before,
    );
    const minimum = perNode.get(lost.id) ?? 0;
    const moved = shardMoves(before, after);
    worstMovesRatio = Math.max(worstMovesRatio, moved / Math.max(1, minimum));
    const joined = placeShards(shards, [...nodes, { id: "w-new", weight: 1 }], before);
    shardRows.push({
      workers: workerCount,
      shards,
      max_over_fair_share: Math.max(...spread),
      min_over_fair_share: Math.min(...spread),
      moves_on_loss: moved,
      minimum_moves_on_loss: minimum,
      moves_on_join: shardMoves(before, joined),
      fair_share_of_new_worker: Math.round(shards / (totalWeight + 1)),
      placement_ms: placeMs,
    });
    process.stderr.write(`placement bench: ${JSON.stringify(shardRows[shardRows.length - 1])}\n`);
  }
  process.stderr.write("placement bench: failover timing on a nats-server of its own\n");
  const failover = await failoverTiming({
    trials: options.smoke ? 1 : 5,
    tickMs: 100,
    heartbeatMs: 100,
    heartbeatTtlMs: 1000,
    leaseTtlMs: 1000,
  });
  return {
    name: "placement",
    expert_max_mean_load: worst,
    // The lower bound with split routing is 1.0 (every worker at the mean).
    expert_max_mean_load_fresh_plan: worstFresh,
    expert_max_mean_load_eplb_even_split: worstEven,
    placement_ms_256_experts_256_workers: options.smoke ? undefined : time256,
    shard_moves_vs_minimum: worstMovesRatio,
    shard_move_after_worker_loss_ms: failover.shard_move_after_last_heartbeat_ms.max,
    leader_takeover_ms: failover.leader_takeover_after_kill_ms.max,
    failover,
    rows,
    shard_rows: shardRows,
  };
}
