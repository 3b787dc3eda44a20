/**
 * A cluster's name namespaces everything of one deployment on shared servers: NATS
 * buckets and subjects, BullMQ queues in Redis. Defined once, here, for every program.
 */
export const DEFAULT_CLUSTER_NAME = "default";
