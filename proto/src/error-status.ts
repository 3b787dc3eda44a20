/**
 * Errors on the wire, in one table keyed on the error code: the gRPC status a server
 * answers a failed call with, and the error a client makes of a status it receives.
 * Client faults are INVALID_ARGUMENT (or FAILED_PRECONDITION); state that is gone is
 * NOT_FOUND; overload RESOURCE_EXHAUSTED; a peer's outage UNAVAILABLE; the server's own
 * faults INTERNAL — so a caller can tell "fix your request" from "try again" from "our bug".
 */
import { randomBytes } from "node:crypto";
import { status as GrpcStatus, type ServiceError } from "@grpc/grpc-js";
import { TandemError, type ErrorCode } from "@tandem/common";

export const STATUS_BY_CODE: Record<ErrorCode, GrpcStatus> = {
  INVALID_ARGUMENT: GrpcStatus.INVALID_ARGUMENT,
  CODEC_INVALID: GrpcStatus.INVALID_ARGUMENT,
  USAGE: GrpcStatus.INVALID_ARGUMENT,
  UNAUTHENTICATED: GrpcStatus.UNAUTHENTICATED,
  ABORTED: GrpcStatus.ABORTED,
  FAILED_PRECONDITION: GrpcStatus.FAILED_PRECONDITION,
  SESSION_NOT_FOUND: GrpcStatus.NOT_FOUND,
  // The escalation protocol answers lost context with a ContextLost message; a call that
  // fails on it anyway tells the caller to replay, which is a precondition of the call.
  CONTEXT_LOST: GrpcStatus.FAILED_PRECONDITION,
  RESOURCE_EXHAUSTED: GrpcStatus.RESOURCE_EXHAUSTED,
  UNAVAILABLE: GrpcStatus.UNAVAILABLE,
  CANCELLED: GrpcStatus.CANCELLED,
  // The server's model files or its own configuration: not the caller's fault.
  CONFIG_VALUE: GrpcStatus.INTERNAL,
  CHECKPOINT_INVALID: GrpcStatus.INTERNAL,
  MODEL_CONFIG_INVALID: GrpcStatus.INTERNAL,
  TENSOR_MISSING: GrpcStatus.INTERNAL,
  TENSOR_MISMATCH: GrpcStatus.INTERNAL,
  UNSUPPORTED: GrpcStatus.UNIMPLEMENTED,
  RECORD_INVALID: GrpcStatus.INTERNAL,
  GRAPH_IO: GrpcStatus.INTERNAL,
  INTERNAL: GrpcStatus.INTERNAL,
};

/** The error code a client gives a failed call's status (the inverse of the table, where it is one). */
const CODE_BY_STATUS: Partial<Record<GrpcStatus, ErrorCode>> = {
  [GrpcStatus.INVALID_ARGUMENT]: "INVALID_ARGUMENT",
  [GrpcStatus.FAILED_PRECONDITION]: "FAILED_PRECONDITION",
  [GrpcStatus.NOT_FOUND]: "SESSION_NOT_FOUND",
  [GrpcStatus.RESOURCE_EXHAUSTED]: "RESOURCE_EXHAUSTED",
  [GrpcStatus.UNAVAILABLE]: "UNAVAILABLE",
  [GrpcStatus.DEADLINE_EXCEEDED]: "UNAVAILABLE",
  // A call the caller did not cancel itself was cancelled by the server or the transport
  // (a worker shutting down): to the caller, the peer went away.
  [GrpcStatus.CANCELLED]: "UNAVAILABLE",
  [GrpcStatus.UNIMPLEMENTED]: "UNSUPPORTED",
  [GrpcStatus.UNAUTHENTICATED]: "UNAUTHENTICATED",
  [GrpcStatus.ABORTED]: "ABORTED",
};

export interface WireStatus {
  code: GrpcStatus;
  /** What the caller is told. */
  details: string;
  /** What the server's log says: `details`, or for a fault of ours the whole message behind its incident id. */
  logged: string;
}

/**
 * The status to end a call with. Tandem errors by their code, with their message (it
 * names the field); a fault of ours (INTERNAL: a bug, our model files, a peer that
 * refused us) tells the caller only an incident id, which the server's log gives with the
 * whole message: its text may name the server's files, peers or state, and the caller
 * (a device, a client of the public API) is not to be trusted with those.
 */
export function statusOf(error: unknown): WireStatus {
  const code = error instanceof TandemError ? STATUS_BY_CODE[error.code] : GrpcStatus.INTERNAL;
  const message = error instanceof Error ? error.message : String(error);
  if (code !== GrpcStatus.INTERNAL) return { code, details: message, logged: message };
  const incident = randomBytes(4).toString("hex");
  return {
    code,
    details: `internal error (incident ${incident}; the server's log has the details)`,
    logged: `incident ${incident}: ${message}`,
  };
}

/** A failed call's status as a Tandem error, so callers classify it by code like any other. */
export function errorOfStatus(
  error: Pick<ServiceError, "code" | "details" | "message">,
  peer: string,
): TandemError {
  const code = CODE_BY_STATUS[error.code as GrpcStatus] ?? "INTERNAL";
  const details = error.details || error.message;
  return new TandemError(code, `${peer}: ${GrpcStatus[error.code] ?? error.code}: ${details}`, {
    cause: error,
  });
}

/** Ends a server call with the error's status. */
export function failCall(
  call: { emit(event: "error", error: unknown): unknown },
  error: unknown,
): WireStatus {
  const status = statusOf(error);
  call.emit("error", { code: status.code, details: status.details, message: status.details });
  return status;
}
