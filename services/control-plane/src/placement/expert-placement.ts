/**
 * Placement of MoE experts on cloud workers from measured activation load, after
 * DeepSeek's EPLB: give hot experts more replicas (each new replica goes to the expert
 * with the highest load per replica), then pack replicas onto workers largest first,
 * each onto the least-loaded worker with a free slot and no replica of that expert yet.
 * To move few experts, a replica goes back to a worker that held the expert before when
 * that costs at most `stickiness` of balance. Pure and deterministic.
 */
import { InternalError, InvalidArgumentError } from "@tandem/common";

import type { ReplicaShares } from "./replica-shares.ts";

export interface ExpertWorker {
  id: string;
  /** Expert replicas the worker's memory holds. */
  slots: number;
}

/** Expert id → worker ids holding a replica. */
export type ExpertPlacement = Map<number, string[]>;

export interface ExpertPlacementOptions {
  /** Replicas beyond one per expert. @default workers.length (one redundant replica per worker) */
  redundantReplicas?: number;
  /**
   * A previous holder is preferred when its load is within this fraction of a mean
   * worker's load of the least-loaded candidate. 0 ignores the previous placement.
   * @default 0.05
   */
  stickiness?: number;
}

export interface PlacementQuality {
  /** Max over workers of expected load ÷ mean load (1.0 is perfect). */
  maxMeanLoad: number;
  workerLoads: number[];
}

/**
 * The best max/mean any placement with this many replicas can reach: a worker holds at
 * least one replica, so the heaviest replica (after the best split of load over replicas)
 * bounds the maximum from below, as does the mean.
 */
export function maxMeanLowerBound(
  loads: number[],
  workerCount: number,
  redundantReplicas = workerCount,
): number {
  const counts = replicaCounts(loads, loads.length + redundantReplicas, workerCount);
  const heaviest = Math.max(...loads.map((l, e) => l / counts[e]));
  const mean = loads.reduce((a, b) => a + b, 0) / workerCount;
  return Math.max(1, heaviest / mean);
}

/** Max-heap by key, over indices. */
class MaxHeap {
  private readonly items: number[] = [];
  constructor(private readonly key: (i: number) => number) {}
  push(i: number): void {
    this.items.push(i);
    let c = this.items.length - 1;
    while (c > 0) {
      const p = (c - 1) >> 1;
      if (this.before(this.items[p], this.items[c])) break;
      [this.items[p], this.items[c]] = [this.items[c], this.items[p]];
      c = p;
    }
  }
  pop(): number {
    const top = this.items[0];
    const last = this.items.pop()!;
    if (this.items.length > 0) {
      this.items[0] = last;
      let p = 0;
      for (;;) {
        const l = 2 * p + 1;
        const r = l + 1;
        let best = p;
        if (l < this.items.length && !this.before(this.items[best], this.items[l])) best = l;
        if (r < this.items.length && !this.before(this.items[best], this.items[r])) best = r;
        if (best === p) break;
        [this.items[p], this.items[best]] = [this.items[best], this.items[p]];
        p = best;
      }
    }
    return top;
  }
  /** Ties by lower index first, for determinism. */
  private before(a: number, b: number): boolean {
    const ka = this.key(a);
    const kb = this.key(b);
    return ka > kb || (ka === kb && a < b);
  }
}

/** Replica counts per expert: start at one, give each extra replica to the highest load per replica. */
export function replicaCounts(loads: number[], totalReplicas: number, maxPerExpert: number): number[] {
  const counts = loads.map(() => 1);
  const heap = new MaxHeap((e) => (counts[e] < maxPerExpert ? loads[e] / counts[e] : -1));
  loads.forEach((_, e) => heap.push(e));
  for (let extra = totalReplicas - loads.length; extra > 0; extra--) {
    const e = heap.pop();
    if (counts[e] >= maxPerExpert) break;
    counts[e]++;
    heap.push(e);
  }
  return counts;
}

export function placeExperts(
  loads: number[],
  workers: ExpertWorker[],
  previous?: ExpertPlacement,
  options: ExpertPlacementOptions = {},
): ExpertPlacement {
  const sortedWorkers = [...workers].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const totalSlots = sortedWorkers.reduce((sum, w) => sum + w.slots, 0);
  if (totalSlots < loads.length)
    throw new InvalidArgumentError(
      "workers",
      `${loads.length} experts need ${loads.length} slots, the workers have ${totalSlots}`,
    );
  const replicas = Math.min(totalSlots, loads.length + (options.redundantReplicas ?? sortedWorkers.length));
  const totalLoad = loads.reduce((a, b) => a + b, 0);
  const meanWorkerLoad = totalLoad / sortedWorkers.length;
  // Two ways to choose replica counts, packed alike, the better kept. EPLB's (each extra
  // replica to the highest load per replica) suits many experts per worker; with about
  // one replica per worker it leaves replicas just under the mean that pair badly, and
  // sizing each hot expert's replicas to the mean worker load packs far better.
  const candidates = [
    replicaCounts(loads, replicas, sortedWorkers.length),
    meanSizedCounts(loads, replicas, sortedWorkers.length, meanWorkerLoad),
  ];
  let best: { placement: ExpertPlacement; max: number } | undefined;
  for (const counts of candidates) {
    const packed = packReplicas(
      loads,
      counts,
      sortedWorkers,
      previous,
      (options.stickiness ?? 0.05) * meanWorkerLoad,
    );
    if (!best || packed.max < best.max - 1e-9) best = packed;
  }
  return best!.placement;
}

/** Replica counts sized so a hot expert's replicas carry about a mean worker's load each. */
function meanSizedCounts(
  loads: number[],
  totalReplicas: number,
  maxPerExpert: number,
  mean: number,
): number[] {
  const counts = loads.map((l) => Math.min(maxPerExpert, Math.max(1, Math.ceil(l / mean - 1e-9))));
  // Over budget: take replicas back where it raises the load per replica least.
  let total = counts.reduce((a, b) => a + b, 0);
  while (total > totalReplicas) {
    let pick = -1;
    for (let e = 0; e < counts.length; e++) {
      if (counts[e] <= 1) continue;
      if (pick < 0 || loads[e] / (counts[e] - 1) < loads[pick] / (counts[pick] - 1)) pick = e;
    }
    if (pick < 0) break;
    counts[pick]--;
    total--;
  }
  return counts;
}

/**
 * Packs replicas largest first onto the least-loaded worker with a free slot and no
 * replica of that expert, preferring a previous holder within `tolerance`.
 */
function packReplicas(
  loads: number[],
  counts: number[],
  sortedWorkers: ExpertWorker[],
  previous: ExpertPlacement | undefined,
  tolerance: number,
): { placement: ExpertPlacement; max: number } {
  // Replicas largest first (LPT), ties by expert id.
  const items: { expert: number; load: number }[] = [];
  counts.forEach((count, expert) => {
    for (let r = 0; r < count; r++) items.push({ expert, load: loads[expert] / count });
  });
  items.sort((a, b) => b.load - a.load || a.expert - b.expert);
  const workerIndex = new Map(sortedWorkers.map((w, i) => [w.id, i]));
  const previousHolders = new Map<number, Set<number>>();
  for (const [expert, ids] of previous ?? []) {
    previousHolders.set(
      expert,
      new Set(ids.map((id) => workerIndex.get(id)).filter((i): i is number => i !== undefined)),
    );
  }
  const workerLoad = new Float64Array(sortedWorkers.length);
  const used = new Int32Array(sortedWorkers.length);
  const holders = new Map<number, Set<number>>();
  const assigned: { expert: number; load: number }[][] = sortedWorkers.map(() => []);
  for (const item of items) {
    const held = holders.get(item.expert) ?? new Set<number>();
    let best = -1;
    for (let w = 0; w < sortedWorkers.length; w++) {
      if (used[w] >= sortedWorkers[w].slots || held.has(w)) continue;
      if (best < 0 || workerLoad[w] < workerLoad[best]) best = w;
    }
    if (best < 0)
      throw new InternalError(`placeExperts: no free slot for a replica of expert ${item.expert}`);
    const before = previousHolders.get(item.expert);
    if (before && tolerance > 0 && !before.has(best)) {
      let sticky = -1;
      for (const w of before) {
        if (used[w] >= sortedWorkers[w].slots || held.has(w)) continue;
        if (
          workerLoad[w] <= workerLoad[best] + tolerance &&
          (sticky < 0 || workerLoad[w] < workerLoad[sticky])
        )
          sticky = w;
      }
      if (sticky >= 0) best = sticky;
    }
    workerLoad[best] += item.load;
    used[best]++;
    held.add(best);
    holders.set(item.expert, held);
    assigned[best].push(item);
  }
  refine(workerLoad, assigned, holders, sortedWorkers);
  const placement: ExpertPlacement = new Map();
  for (let e = 0; e < loads.length; e++)
    placement.set(
      e,
      [...(holders.get(e) ?? [])].sort((a, b) => a - b).map((w) => sortedWorkers[w].id),
    );
  return { placement, max: Math.max(...workerLoad) };
}

/**
 * Local search after LPT: while it lowers the maximum, move a replica off the most loaded
 * worker, or swap it for a lighter one, with one of the least-loaded workers. LPT alone
 * leaves replicas just under the mean paired badly when workers hold one or two each.
 */
function refine(
  workerLoad: Float64Array,
  assigned: { expert: number; load: number }[][],
  holders: Map<number, Set<number>>,
  workers: ExpertWorker[],
  candidates = 16,
): void {
  const holds = (w: number, expert: number) => holders.get(expert)!.has(w);
  for (let iteration = 0; iteration < 4 * workers.length; iteration++) {
    let top = 0;
    for (let w = 1; w < workers.length; w++) if (workerLoad[w] > workerLoad[top]) top = w;
    const order = Array.from(workerLoad.keys())
      .filter((w) => w !== top)
      .sort((a, b) => workerLoad[a] - workerLoad[b] || a - b)
      .slice(0, candidates);
    let bestGain = 1e-9;
    let apply: (() => void) | undefined;
    for (const v of order) {
      for (const [i, a] of assigned[top].entries()) {
        // Move a from top to v.
        if (assigned[v].length < workers[v].slots && !holds(v, a.expert)) {
          const newMax = Math.max(workerLoad[top] - a.load, workerLoad[v] + a.load);
          const gain = workerLoad[top] - newMax;
          if (gain > bestGain) {
            bestGain = gain;
            apply = () => {
              assigned[top].splice(i, 1);
              assigned[v].push(a);
              holders.get(a.expert)!.delete(top);
              holders.get(a.expert)!.add(v);
              workerLoad[top] -= a.load;
              workerLoad[v] += a.load;
            };
          }
        }
        // Swap a (on top) with a lighter b (on v).
        for (const [j, b] of assigned[v].entries()) {
          if (b.load >= a.load || b.expert === a.expert || holds(v, a.expert) || holds(top, b.expert))
            continue;
          const delta = a.load - b.load;
          const newMax = Math.max(workerLoad[top] - delta, workerLoad[v] + delta);
          const gain = workerLoad[top] - newMax;
          if (gain > bestGain) {
            bestGain = gain;
            apply = () => {
              assigned[top][i] = b;
              assigned[v][j] = a;
              holders.get(a.expert)!.delete(top);
              holders.get(a.expert)!.add(v);
              holders.get(b.expert)!.delete(v);
              holders.get(b.expert)!.add(top);
              workerLoad[top] -= delta;
              workerLoad[v] += delta;
            };
          }
        }
      }
    }
    if (!apply) return;
    apply();
  }
}

/**
 * Expected load per worker when each expert's load splits over its replicas by `shares`
 * (evenly, as EPLB routes, when none are given).
 */
export function placementQuality(
  loads: number[],
  placement: ExpertPlacement,
  workerIds: string[],
  shares?: ReplicaShares,
): PlacementQuality {
  const index = new Map(workerIds.map((id, i) => [id, i]));
  const workerLoads = new Array<number>(workerIds.length).fill(0);
  for (const [expert, ids] of placement) {
    const split = shares?.get(expert);
    ids.forEach((id, r) => {
      workerLoads[index.get(id)!] += loads[expert] * (split ? split[r] : 1 / ids.length);
    });
  }
  const mean = loads.reduce((a, b) => a + b, 0) / workerIds.length;
  return { maxMeanLoad: Math.max(...workerLoads) / mean, workerLoads };
}

/** Replicas added: (expert, worker) pairs in `after` that were not in `before`. */
export function replicaMoves(before: ExpertPlacement | undefined, after: ExpertPlacement): number {
  let moves = 0;
  for (const [expert, ids] of after) {
    const old = new Set(before?.get(expert) ?? []);
    for (const id of ids) if (!old.has(id)) moves++;
  }
  return moves;
}

/**
 * Re-planning with hysteresis: a new plan replaces the current one only when the current
 * placement's imbalance under the latest load window exceeds `threshold` and the new
 * plan improves it by at least `minGain`, so the map does not flap on noise.
 */
export function shouldReplan(
  currentMaxMean: number,
  plannedMaxMean: number,
  threshold = 1.05,
  minGain = 0.02,
): boolean {
  return currentMaxMean > threshold && currentMaxMean - plannedMaxMean >= minGain;
}

/** The greedy baseline: one replica per expert, each onto the least-loaded worker (LPT). */
export function greedyBaseline(loads: number[], workers: ExpertWorker[]): ExpertPlacement {
  return placeExperts(loads, workers, undefined, { redundantReplicas: 0, stickiness: 0 });
}
