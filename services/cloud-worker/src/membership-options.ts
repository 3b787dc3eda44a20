/**
 * A worker's part in a cluster, as configured: apart from ClusterMembership so settings
 * can name the defaults without loading the NATS client.
 */
import type { ExpertMapRecord, NatsCredentials } from "@tandem/cluster";
export interface MembershipOptions {
  natsUrl: string;
  /** How the worker proves itself to NATS. @default anonymous */
  natsCredentials?: NatsCredentials;
  cluster: string;
  nodeId: string;
  endpoint: string;
  /** host:port of its Experts service (expert parallelism), for other workers. @default none */
  expertEndpoint?: string;
  /** Relative KV capacity. @default 1 */
  weight?: number;
  /** @default CLUSTER_DEFAULTS.heartbeatMs */
  heartbeatMs?: number;
  /** Longest wait, in drain(), for the leader to move this worker's shards away. @default 10000 */
  drainTimeoutMs?: number;
  /** Expert replicas this worker's memory holds, for the expert planner. @default 0 (dense model) */
  expertSlots?: number;
  /** Expert activations since the last call (see SegmentModel.takeExpertCounts); undefined for a dense model. */
  takeExpertCounts?: () => number[] | undefined;
  /** Expert parallelism: the experts this worker has loaded, by expert-map id, for its heartbeat. @default not reported */
  heldExperts?: () => number[];
  /** Expert parallelism: told of each expert map the worker takes up (after its replicas are recorded). */
  onExpertMap?: (map: ExpertMapRecord, held: Map<number, number>) => void;
}

export const DEFAULT_MEMBERSHIP_OPTIONS = { weight: 1, drainTimeoutMs: 10_000 } as const;
