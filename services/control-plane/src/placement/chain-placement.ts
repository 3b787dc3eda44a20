/**
 * Expert placement for split routing (replica shares, see replica-shares.ts), after
 * McNaughton's wrap-around rule: lay the experts' loads end to end and cut the line into
 * pieces of one mean worker load each; worker w holds the experts its piece touches, with
 * shares equal to the lengths. Every worker then carries exactly the mean.
 *
 * A piece touches at most two experts if each expert's load is at least a piece, so
 * experts lighter than a mean worker load ("light" experts) are placed whole first, one
 * per worker where possible, and the chain runs over what each worker has left. Experts
 * keep their previous order along the chain, so a load shift moves the cuts, and with
 * them few replicas, rather than reshuffling the line. Returns undefined when slots or
 * the replica budget do not allow it; the caller falls back to even-split packing.
 * Pure and deterministic.
 */
import type { ExpertPlacement, ExpertWorker } from "./expert-placement.ts";
import type { ReplicaShares } from "./replica-shares.ts";

export interface ChainPlan {
  placement: ExpertPlacement;
  shares: ReplicaShares;
}

/** Pieces smaller than this fraction of a mean worker load stay with their neighbour. */
const MIN_PIECE = 1e-6;

export function chainPlacement(
  loads: number[],
  workers: ExpertWorker[],
  maxReplicas: number,
  previous?: ExpertPlacement,
): ChainPlan | undefined {
  const sorted = [...workers].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const total = loads.reduce((a, b) => a + b, 0);
  if (sorted.length === 0 || total <= 0) return undefined;
  const mean = total / sorted.length;
  const rank = new Map(sorted.map((w, i) => [w.id, i]));
  const room = new Float64Array(sorted.length).fill(mean);
  const used = new Int32Array(sorted.length);
  const pieces = new Map<number, { worker: number; load: number }[]>();
  const add = (expert: number, worker: number, load: number) => {
    const list = pieces.get(expert) ?? [];
    const existing = list.find((p) => p.worker === worker);
    if (existing) existing.load += load;
    else {
      list.push({ worker, load });
      used[worker]++;
    }
    pieces.set(expert, list);
    room[worker] -= load;
  };

  const light = loads.map((l, e) => e).filter((e) => loads[e] < mean);
  const heavy = loads.map((l, e) => e).filter((e) => loads[e] >= mean);

  // Light experts whole, heaviest first, each on the worker with the most room left that
  // keeps two slots for the chain; a previous holder wins when it has as much room.
  light.sort((a, b) => loads[b] - loads[a] || a - b);
  const fits = (w: number, expert: number, reserve: number) =>
    used[w] + 1 + reserve <= sorted[w].slots && room[w] >= loads[expert];
  for (const expert of light) {
    let best = -1;
    for (const reserve of [2, 1]) {
      for (let w = 0; w < sorted.length; w++) {
        if (fits(w, expert, reserve) && (best < 0 || room[w] > room[best])) best = w;
      }
      if (best >= 0) {
        for (const id of previous?.get(expert) ?? []) {
          const w = rank.get(id);
          if (w !== undefined && fits(w, expert, reserve) && room[w] >= room[best] - 1e-9 * mean) best = w;
        }
        break;
      }
    }
    if (best < 0) return undefined;
    add(expert, best, loads[expert]);
  }

  // The chain of heavy experts, in their previous order along the workers, new ones last by load.
  const firstWorker = new Map(
    heavy.map((expert) => {
      const ws = (previous?.get(expert) ?? []).map((id) => rank.get(id)).filter((w) => w !== undefined);
      return [expert, ws.length > 0 ? Math.min(...ws) : Infinity];
    }),
  );
  heavy.sort((a, b) => firstWorker.get(a)! - firstWorker.get(b)! || loads[b] - loads[a] || a - b);
  let w = 0;
  for (const expert of heavy) {
    let remaining = loads[expert];
    while (remaining > MIN_PIECE * mean) {
      while (w < sorted.length - 1 && room[w] <= MIN_PIECE * mean) w++;
      const take = w === sorted.length - 1 ? remaining : Math.min(remaining, room[w]);
      add(expert, w, take);
      remaining -= take;
    }
  }

  let replicas = 0;
  for (const list of pieces.values()) replicas += list.length;
  if (replicas > maxReplicas) return undefined;
  if (sorted.some((worker, i) => used[i] > worker.slots)) return undefined;

  const placement: ExpertPlacement = new Map();
  const shares: ReplicaShares = new Map();
  for (let expert = 0; expert < loads.length; expert++) {
    const list = (pieces.get(expert) ?? []).sort((a, b) => a.worker - b.worker);
    if (list.length === 0) {
      // An expert with no load still needs a home: the worker with the most free slots.
      let best = 0;
      for (let i = 1; i < sorted.length; i++)
        if (sorted[i].slots - used[i] > sorted[best].slots - used[best]) best = i;
      if (used[best] >= sorted[best].slots) return undefined;
      used[best]++;
      placement.set(expert, [sorted[best].id]);
      shares.set(expert, [1]);
      continue;
    }
    const load = list.reduce((a, p) => a + p.load, 0);
    placement.set(
      expert,
      list.map((p) => sorted[p.worker].id),
    );
    shares.set(
      expert,
      list.map((p) => (load > 0 ? p.load / load : 1 / list.length)),
    );
  }
  return { placement, shares };
}
