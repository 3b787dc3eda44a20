/** @tandem/proto: the gRPC contract (loaded .proto files and their generated types) and server plumbing. */
export * from "./tandem-protos.ts";
export { startGrpcServer, type RunningServer, type ServingOptions } from "./grpc-server.ts";
export { STATUS_BY_CODE, errorOfStatus, failCall, statusOf, type WireStatus } from "./error-status.ts";
