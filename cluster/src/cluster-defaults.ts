/**
 * What every party of a cluster must agree on, defined once: where NATS is, the cluster's
 * name, and the heartbeat timing (workers beat every heartbeatMs; readers count a node
 * dead after heartbeatTtlMs without one, i.e. after four missed beats).
 */
import { DEFAULT_CLUSTER_NAME } from "@tandem/common";

export const CLUSTER_DEFAULTS = {
  natsUrl: "nats://127.0.0.1:4222",
  cluster: DEFAULT_CLUSTER_NAME,
  heartbeatMs: 500,
  heartbeatTtlMs: 2000,
} as const;
