/** @tandem/cluster: the names, records and maps every party of a cluster shares on NATS. */
export { connectNats, kvReplicas, type NatsConnectOptions, type NatsCredentials } from "./nats-connection.ts";
export { controlPlaneNames, type ControlPlaneNames } from "./control-plane-names.ts";
export { KvRecord, nextVersion, watchVersioned, type VersionedRecord } from "./kv-record.ts";
export { openLease, type LeaseRecord, type LeaseStore } from "./lease-record.ts";
export {
  MAX_CLOCK_SKEW_MS,
  NodeRecordWriter,
  NodeRegistry,
  type NodeRecord,
  type NodeRegistryOptions,
} from "./node-registry.ts";
export {
  EXPERT_LOAD_REPORT_SCHEMA,
  expertsOf,
  replicasOf,
  openExpertMap,
  openShardMap,
  ownerOf,
  type ExpertLoadReport,
  type ExpertMapRecord,
  type ExpertMapStore,
  type ShardMapRecord,
  type ShardMapStore,
} from "./placement-map.ts";
export { hash32, sessionShard } from "./session-shard.ts";
export { VersionedMapView } from "./versioned-map-view.ts";
export { clusterStatus, type ClusterStatus } from "./cluster-status.ts";
