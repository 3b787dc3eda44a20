/**
 * The expert plan the control plane publishes: which workers hold which experts, and what
 * share of each expert's tokens each replica takes. Two placements compete, each with
 * the shares that balance it best: the chain (McNaughton) placement made for split
 * routing, and EPLB's even-split packing (the fallback when slots are too tight for the
 * chain). The lower maximum load wins; near-ties go to the one that moves fewer replicas.
 * Pure and deterministic.
 */
import { chainPlacement } from "./chain-placement.ts";
import {
  placeExperts,
  placementQuality,
  replicaMoves,
  shouldReplan,
  type ExpertPlacement,
  type ExpertPlacementOptions,
  type ExpertWorker,
} from "./expert-placement.ts";
import { balancedShares, type ReplicaShares } from "./replica-shares.ts";

export interface ExpertPlan {
  placement: ExpertPlacement;
  shares: ReplicaShares;
  /** Expected max/mean worker load under the loads it was planned for. */
  maxMeanLoad: number;
}

/** Plans differing by less than this in max/mean count as tied. */
const TIE = 0.005;

export function planExperts(
  loads: number[],
  workers: ExpertWorker[],
  previous?: ExpertPlacement,
  options: ExpertPlacementOptions = {},
): ExpertPlan {
  const ids = workers.map((w) => w.id).sort();
  const totalSlots = workers.reduce((sum, w) => sum + w.slots, 0);
  const maxReplicas = Math.min(totalSlots, loads.length + (options.redundantReplicas ?? workers.length));
  const candidates: ExpertPlan[] = [];
  const chain = chainPlacement(loads, workers, maxReplicas, previous);
  if (chain) candidates.push(evaluate(loads, chain.placement, ids, chain.shares));
  const packed = placeExperts(loads, workers, previous, options);
  candidates.push(evaluate(loads, packed, ids, balancedShares(loads, packed, ids)));
  const moves = candidates.map((c) => replicaMoves(previous, c.placement));
  const [best, other] = candidates
    .map((_, i) => i)
    .sort((a, b) => candidates[a].maxMeanLoad - candidates[b].maxMeanLoad || moves[a] - moves[b]);
  // Near-ties go to the plan that moves fewer replicas from the current one.
  if (
    other !== undefined &&
    previous &&
    candidates[other].maxMeanLoad - candidates[best].maxMeanLoad < TIE &&
    moves[other] < moves[best]
  )
    return candidates[other];
  return candidates[best];
}

/** A placement's quality under `loads` once its shares are re-balanced for them (no replica moves). */
export function rebalance(loads: number[], placement: ExpertPlacement, workerIds: string[]): ExpertPlan {
  return evaluate(loads, placement, workerIds, balancedShares(loads, placement, workerIds));
}

function evaluate(
  loads: number[],
  placement: ExpertPlacement,
  ids: string[],
  shares: ReplicaShares,
): ExpertPlan {
  return { placement, shares, maxMeanLoad: placementQuality(loads, placement, ids, shares).maxMeanLoad };
}

export interface ReplanDecision {
  plan: ExpertPlan;
  /** What changed: nothing, only the shares (no replica moves), or the replicas. */
  change: "none" | "shares" | "replicas";
}

export interface ReplanThresholds {
  /** Move replicas when the re-balanced current placement exceeds this max/mean. @default 1.05 */
  moveAbove?: number;
  /** Re-balance shares when the current shares exceed this max/mean. @default 1.02 */
  reshareAbove?: number;
}

/**
 * The next plan under a new load window, with hysteresis so the map does not flap:
 * shares, which move nothing, are re-balanced at a low threshold; replicas move only when
 * re-balanced shares leave the load clearly unbalanced and a new plan is clearly better.
 */
export function nextExpertPlan(
  loads: number[],
  workers: ExpertWorker[],
  current: ExpertPlan | undefined,
  thresholds: ReplanThresholds = {},
): ReplanDecision {
  const planned = planExperts(loads, workers, current?.placement);
  if (!current) return { plan: planned, change: "replicas" };
  const ids = workers.map((w) => w.id).sort();
  const reshared = rebalance(loads, current.placement, ids);
  if (shouldReplan(reshared.maxMeanLoad, planned.maxMeanLoad, thresholds.moveAbove ?? 1.05))
    return { plan: planned, change: "replicas" };
  const asIs = placementQuality(loads, current.placement, ids, current.shares).maxMeanLoad;
  if (shouldReplan(asIs, reshared.maxMeanLoad, thresholds.reshareAbove ?? 1.02, 0.005))
    return { plan: reshared, change: "shares" };
  return { plan: { ...current, maxMeanLoad: asIs }, change: "none" };
}
