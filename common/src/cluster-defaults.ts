/**
 * What every party of a cluster must agree on, defined once: where NATS is, the cluster's
 * name (it namespaces everything of one deployment on shared servers: NATS buckets and
 * subjects, BullMQ queues in Redis), and the heartbeat timing (workers beat every
 * heartbeatMs; readers count a node dead after heartbeatTtlMs without one, i.e. after
 * four missed beats). Plain constants, here rather than beside the NATS code, so a
 * program's settings can name them without loading a NATS client.
 */
export const DEFAULT_CLUSTER_NAME = "default";

export const CLUSTER_DEFAULTS = {
  natsUrl: "nats://127.0.0.1:4222",
  cluster: DEFAULT_CLUSTER_NAME,
  heartbeatMs: 500,
  heartbeatTtlMs: 2000,
} as const;
