/** @tandem/proto: the gRPC contract (loaded .proto files and their generated types) and server plumbing. */
export * from "./tandem-protos.ts";
export { startGrpcServer, type RunningServer, type ServingOptions } from "./grpc-server.ts";
export { HealthService, MAX_HEALTH_WATCHES, type ServingStatus } from "./health-service.ts";
export {
  LIVENESS_SERVICE,
  startConfiguredHealthServer,
  type HealthServer,
  type HealthServerOptions,
} from "./health-server.ts";
export type { GrpcClientConstructor, GrpcService } from "./service-definitions.ts";
export { STATUS_BY_CODE, errorOfStatus, failCall, statusOf, type WireStatus } from "./error-status.ts";
export {
  channelCredentials,
  checkPlaintextListen,
  serverCredentials,
  type ClientTlsFiles,
  type ServerTlsFiles,
} from "./transport-security.ts";
export {
  deviceOf,
  isWorkerCertificate,
  workerPeerOf,
  type DeviceIdentity,
  type WorkerPeer,
} from "./device-identity.ts";
export { API_KEY_HASH_PATTERN, ApiKeys, hashApiKey, newApiKey } from "./api-keys.ts";
export { whenWritable } from "./stream-flow.ts";
