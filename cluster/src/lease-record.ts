/** The leader lease as stored in the cluster's leader bucket (the control plane's LeaderLease takes and renews it). */
import type { NatsConnection } from "@nats-io/transport-node";
import { z } from "zod";
import type { ControlPlaneNames } from "./control-plane-names.ts";
import { KvRecord } from "./kv-record.ts";

const LEASE_SCHEMA = z.object({
  holder: z.string().min(1),
  /** Epoch ms; a lease with expiresAt in the past is free to take. */
  expiresAt: z.number(),
});
export type LeaseRecord = z.output<typeof LEASE_SCHEMA>;

/** Key of the lease in the leader bucket. */
const LEASE_KEY = "leader";

export type LeaseStore = KvRecord<typeof LEASE_SCHEMA>;

export function openLease(nc: NatsConnection, names: ControlPlaneNames): Promise<LeaseStore> {
  return KvRecord.open(nc, { bucket: names.leaderBucket, key: LEASE_KEY, schema: LEASE_SCHEMA, history: 1 });
}
