/**
 * @tandem/control-plane: `tandem-control-plane`, a replica of the control plane (leader
 * lease, shard and expert placement), and its pure placement algorithms.
 */
export { Controller, type ControllerOptions } from "./controller.ts";
export { ExpertPlanner, type ExpertPlannerOptions } from "./expert-planner.ts";
export { CONTROL_CONFIG_SCHEMA, main } from "./main.ts";
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
