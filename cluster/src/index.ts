/** @tandem/cluster: the names, records and maps every party of a cluster shares on NATS. */
export { controlPlaneNames, type ControlPlaneNames } from "./control-plane-names.ts";
export { LEASE_KEY, type LeaseRecord } from "./lease-record.ts";
export { NodeRegistry, type NodeRecord, type NodeRegistryOptions } from "./node-registry.ts";
export {
  PlacementStore,
  expertsOf,
  ownerOf,
  readExpertMap,
  watchExpertMap,
  writeExpertMap,
  type ExpertLoadReport,
  type ExpertMapRecord,
  type ShardMapRecord,
} from "./placement-map.ts";
export { hash32, sessionShard } from "./session-shard.ts";
export { clusterStatus, type ClusterStatus } from "./cluster-status.ts";
