/** The leader lease as stored in the cluster's leader bucket (see the control plane's LeaderLease). */
export interface LeaseRecord {
  holder: string;
  expiresAt: number;
}

/** Key of the lease in the leader bucket. */
export const LEASE_KEY = "leader";
