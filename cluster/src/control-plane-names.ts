/**
 * Every NATS name the control plane uses, built from the cluster name in one place, so
 * tests (and several clusters on one NATS) stay apart by choosing a cluster name.
 */
import { checkClusterName } from "@tandem/common";

export interface ControlPlaneNames {
  cluster: string;
  /** KV bucket: node id → NodeRecord (heartbeat). */
  nodesBucket: string;
  /** KV bucket: placement maps, versioned. */
  placementBucket: string;
  /** KV bucket: the leader lease. */
  leaderBucket: string;
  /** Subject a worker publishes its load on. */
  loadSubject(nodeId: string): string;
}

export function controlPlaneNames(cluster: string): ControlPlaneNames {
  checkClusterName(cluster);
  return {
    cluster,
    nodesBucket: `tandem_${cluster}_nodes`,
    placementBucket: `tandem_${cluster}_placement`,
    leaderBucket: `tandem_${cluster}_leader`,
    loadSubject: (nodeId) => `tandem.${cluster}.load.${nodeId}`,
  };
}
