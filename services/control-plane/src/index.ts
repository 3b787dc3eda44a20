/**
 * @tandem/control-plane: `tandem-control-plane`, a replica of the control plane (leader
 * lease, shard and expert planners), and its pure placement algorithms.
 */
export { Controller, DEFAULT_CONTROLLER_OPTIONS, type ControllerOptions } from "./controller.ts";
export { ExpertPlanner, type ExpertPlannerOptions } from "./expert-planner.ts";
export { ShardPlanner, type ShardPlannerOptions } from "./shard-planner.ts";
export { DEFAULT_LEASE_TIMING, LeaderLease } from "./leader-lease.ts";
export { CONTROL_CONFIG_SCHEMA, CONTROL_ENV_PREFIX } from "./control-config.ts";
export { CONTROL_PROGRAM, main } from "./main.ts";
// A type only: a value export would load prom-client into every control plane.
export type { ControlPlaneMetrics } from "./control-plane-metrics.ts";
export { placeShards, shardMoves, type ShardNode } from "./placement/shard-placement.ts";
export {
  greedyBaseline,
  maxMeanLowerBound,
  placeExperts,
  placementQuality,
  replicaMoves,
  type ExpertPlacement,
  type ExpertWorker,
} from "./placement/expert-placement.ts";
export { nextExpertPlan, planExperts, type ExpertPlan } from "./placement/expert-plan.ts";
