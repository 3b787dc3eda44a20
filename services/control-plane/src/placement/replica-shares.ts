/**
 * Traffic shares of expert replicas. EPLB splits an expert's tokens evenly over its
 * replicas; a router can as well split them in any proportion, and then the placement's
 * balance is no longer bound by how evenly replica sizes pair up on workers. Given which
 * workers hold which experts, the shares that minimise the most loaded worker are a
 * flow problem: the smallest T for which a flow source → expert (capacity: its load) →
 * worker holding it → sink (capacity T) carries every expert's whole load. T is found
 * by bisection, each step a max-flow (Dinic). Pure and deterministic.
 */
import { InvalidArgumentError } from "@tandem/common";
import type { ExpertPlacement } from "./expert-placement.ts";

/** Expert id → share of its tokens per replica, aligned with the placement's worker list; sums to 1. */
export type ReplicaShares = Map<number, number[]>;

/** Even shares: what EPLB's uniform routing over replicas gives. */
export function evenShares(placement: ExpertPlacement): ReplicaShares {
  return new Map([...placement].map(([expert, ids]) => [expert, ids.map(() => 1 / ids.length)]));
}

/** Dinic's max-flow on a small graph with float capacities. */
class FlowNetwork {
  private readonly head: number[];
  private readonly to: number[] = [];
  private readonly capacity: number[] = [];
  private readonly next: number[] = [];
  private level: Int32Array;
  private cursor: Int32Array;

  constructor(private readonly nodeCount: number) {
    this.head = new Array<number>(nodeCount).fill(-1);
    this.level = new Int32Array(nodeCount);
    this.cursor = new Int32Array(nodeCount);
  }

  /** Adds u → v; returns the edge index (its reverse is index ^ 1). */
  addEdge(u: number, v: number, capacity: number): number {
    const index = this.to.length;
    this.to.push(v, u);
    this.capacity.push(capacity, 0);
    this.next.push(this.head[u], this.head[v]);
    this.head[u] = index;
    this.head[v] = index + 1;
    return index;
  }

  /** Flow carried by an edge added with `addEdge`. */
  flowOn(edge: number): number {
    return this.capacity[edge ^ 1];
  }

  maxFlow(source: number, sink: number, epsilon: number): number {
    let total = 0;
    while (this.buildLevels(source, sink, epsilon)) {
      for (let u = 0; u < this.nodeCount; u++) this.cursor[u] = this.head[u];
      for (;;) {
        const pushed = this.augment(source, sink, Infinity, epsilon);
        if (pushed <= epsilon) break;
        total += pushed;
      }
    }
    return total;
  }

  private buildLevels(source: number, sink: number, epsilon: number): boolean {
    this.level.fill(-1);
    this.level[source] = 0;
    const queue = [source];
    for (let i = 0; i < queue.length; i++) {
      const u = queue[i];
      for (let e = this.head[u]; e >= 0; e = this.next[e]) {
        const v = this.to[e];
        if (this.capacity[e] > epsilon && this.level[v] < 0) {
          this.level[v] = this.level[u] + 1;
          queue.push(v);
        }
      }
    }
    return this.level[sink] >= 0;
  }

  private augment(u: number, sink: number, limit: number, epsilon: number): number {
    if (u === sink) return limit;
    for (; this.cursor[u] >= 0; this.cursor[u] = this.next[this.cursor[u]]) {
      const e = this.cursor[u];
      const v = this.to[e];
      if (this.capacity[e] <= epsilon || this.level[v] !== this.level[u] + 1) continue;
      const pushed = this.augment(v, sink, Math.min(limit, this.capacity[e]), epsilon);
      if (pushed > epsilon) {
        this.capacity[e] -= pushed;
        this.capacity[e ^ 1] += pushed;
        return pushed;
      }
    }
    return 0;
  }
}

export interface BalanceOptions {
  /** Bisection stops when the bracket on T is narrower than this fraction of the mean worker load. @default 1e-4 */
  tolerance?: number;
}

/**
 * Shares per replica that minimise the maximum expected worker load for `loads` under
 * `placement` (which workers hold which experts). Experts with no load keep even shares.
 */
export function balancedShares(
  loads: number[],
  placement: ExpertPlacement,
  workerIds: string[],
  options: BalanceOptions = {},
): ReplicaShares {
  const workerIndex = new Map(workerIds.map((id, i) => [id, i]));
  const experts = [...placement.keys()].sort((a, b) => a - b);
  const total = experts.reduce((sum, e) => sum + (loads[e] ?? 0), 0);
  const shares = evenShares(placement);
  if (total <= 0 || workerIds.length === 0) return shares;
  const mean = total / workerIds.length;
  const epsilon = total * 1e-12;

  const solve = (bound: number) => {
    // Nodes: 0 source, 1 sink, 2.. experts, then workers.
    const network = new FlowNetwork(2 + experts.length + workerIds.length);
    const replicaEdges = experts.map((expert, i) => {
      network.addEdge(0, 2 + i, loads[expert] ?? 0);
      return placement.get(expert)!.map((id) => {
        const w = workerIndex.get(id);
        if (w === undefined)
          throw new InvalidArgumentError("placement", `expert ${expert} is on unknown worker ${id}`);
        return network.addEdge(2 + i, 2 + experts.length + w, Infinity);
      });
    });
    workerIds.forEach((_, w) => network.addEdge(2 + experts.length + w, 1, bound));
    const flow = network.maxFlow(0, 1, epsilon);
    return { network, replicaEdges, feasible: flow >= total * (1 - 1e-9) };
  };

  // T lies between the mean and the even-share maximum (always feasible).
  let low = mean;
  let high = 0;
  const even = new Float64Array(workerIds.length);
  for (const expert of experts) {
    const ids = placement.get(expert)!;
    for (const id of ids) even[workerIndex.get(id)!] += (loads[expert] ?? 0) / ids.length;
  }
  for (const l of even) high = Math.max(high, l);
  let best = solve(high);
  if (!best.feasible) return shares; // only by rounding; even shares stand
  const tolerance = (options.tolerance ?? 1e-4) * mean;
  const first = solve(low);
  if (first.feasible) best = first;
  else {
    while (high - low > tolerance) {
      const middle = (low + high) / 2;
      const attempt = solve(middle);
      if (attempt.feasible) {
        high = middle;
        best = attempt;
      } else low = middle;
    }
  }
  experts.forEach((expert, i) => {
    const load = loads[expert] ?? 0;
    if (load <= 0) return;
    const flows = best.replicaEdges[i].map((edge) => best.network.flowOn(edge));
    const sum = flows.reduce((a, b) => a + b, 0);
    shares.set(
      expert,
      flows.map((f) => f / sum),
    );
  });
  return shares;
}
