/**
 * Every error Tandem raises on purpose: one hierarchy, one class per condition, each
 * with a stable `code` and context fields. Behaviour is keyed on the code, in one table
 * each: the gRPC status a server answers with (@tandem/proto's error-status.ts), whether
 * a failure is worth another try (retry-policy.ts), the CLI's exit code.
 *
 *   code                 whose fault            example
 *   INVALID_ARGUMENT     the caller's           a request field out of range (names it)
 *   FAILED_PRECONDITION  the caller's           a session opened with other weights
 *   CODEC_INVALID        the caller's           a hidden-state payload of the wrong size
 *   USAGE                the caller's           an unknown command-line flag
 *   UNAUTHENTICATED      the caller's           no API key, or a device certificate revoked
 *   ABORTED              the caller's (again)   a stream superseded by the same session's newer one
 *   CONFIG_VALUE         the operator's         a program setting out of range (names key and source)
 *   SESSION_NOT_FOUND    nobody's (state gone)  a session evicted or never opened
 *   CONTEXT_LOST         nobody's (state gone)  a worker holds fewer positions than a frame needs
 *   RESOURCE_EXHAUSTED   the server's load      too many sessions for the memory budget
 *   UNAVAILABLE          a peer's               a cloud worker unreachable or past its deadline
 *   CANCELLED            the caller's choice    a client stopped reading
 *   CHECKPOINT_INVALID   the model files'       a truncated safetensors file
 *   MODEL_CONFIG_INVALID the model files'       config.json with a wrong type
 *   TENSOR_MISSING       the model files'       a layer's weight absent
 *   TENSOR_MISMATCH      the model files'       a weight of the wrong shape
 *   UNSUPPORTED          nobody's (not built)   an architecture the engine does not run
 *   RECORD_INVALID       a peer's               a cluster record in NATS that fails its schema
 *   GRAPH_IO             the server's           a segment graph that cannot be written
 *   INTERNAL             ours                   a broken invariant
 */

/** Every error code, in the order of the table above. */
export const ERROR_CODES = [
  "INVALID_ARGUMENT",
  "FAILED_PRECONDITION",
  "CODEC_INVALID",
  "USAGE",
  "UNAUTHENTICATED",
  "ABORTED",
  "CONFIG_VALUE",
  "SESSION_NOT_FOUND",
  "CONTEXT_LOST",
  "RESOURCE_EXHAUSTED",
  "UNAVAILABLE",
  "CANCELLED",
  "CHECKPOINT_INVALID",
  "MODEL_CONFIG_INVALID",
  "TENSOR_MISSING",
  "TENSOR_MISMATCH",
  "UNSUPPORTED",
  "RECORD_INVALID",
  "GRAPH_IO",
  "INTERNAL",
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

export interface ErrorOptions {
  cause?: unknown;
}

/** The base of every Tandem error: `code` says what kind of failure it is. */
export class TandemError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "TandemError";
    this.code = code;
  }
}

// ── The caller's fault ────────────────────────────────────────────────────────────────

/** A caller passed a bad value; `field` names it (a request field, an option, a job key). */
export class InvalidArgumentError extends TandemError {
  readonly field: string;
  constructor(field: string, message: string, options?: ErrorOptions) {
    super("INVALID_ARGUMENT", `${field}: ${message}`, options);
    this.name = "InvalidArgumentError";
    this.field = field;
  }
}

/** A well-formed request that the receiver's state rules out; `field` names what disagrees. */
export class FailedPreconditionError extends TandemError {
  readonly field: string;
  constructor(field: string, message: string, options?: ErrorOptions) {
    super("FAILED_PRECONDITION", `${field}: ${message}`, options);
    this.name = "FailedPreconditionError";
    this.field = field;
  }
}

/** A hidden-state payload cannot be encoded or decoded (wrong size, unknown codec, bad scale). */
export class CodecError extends TandemError {
  constructor(message: string, options?: ErrorOptions) {
    super("CODEC_INVALID", message, options);
    this.name = "CodecError";
  }
}

/** A command line that cannot be run as given; `option` names the flag or argument. */
export class UsageError extends TandemError {
  readonly option: string;
  constructor(option: string, message: string, options?: ErrorOptions) {
    super("USAGE", `${option}: ${message}`, options);
    this.name = "UsageError";
    this.option = option;
  }
}

/** A program setting with a bad value; names the key and where the value came from. */
export class ConfigValueError extends TandemError {
  readonly key: string;
  readonly source: string;
  constructor(key: string, source: string, message: string, options?: ErrorOptions) {
    super("CONFIG_VALUE", `${key}: ${message} (from ${source})`, options);
    this.name = "ConfigValueError";
    this.key = key;
    this.source = source;
  }
}

/** Several settings of one program are bad: every one is reported, one line each. */
export class ConfigErrors extends TandemError {
  readonly errors: readonly ConfigValueError[];
  constructor(errors: ConfigValueError[]) {
    super("CONFIG_VALUE", errors.map((e) => e.message).join("\n"));
    this.name = "ConfigErrors";
    this.errors = errors;
  }
}

// ── State that is gone ────────────────────────────────────────────────────────────────

export class SessionNotFoundError extends TandemError {
  readonly sessionId: string;
  constructor(sessionId: string) {
    super("SESSION_NOT_FOUND", `session "${sessionId}" does not exist`);
    this.name = "SessionNotFoundError";
    this.sessionId = sessionId;
  }
}

/**
 * The upper side of a split (a cloud worker, or an in-process upper segment) holds the
 * session only up to `resumeFrom`: the edge replays hidden states from there.
 */
export class ContextLostError extends TandemError {
  readonly resumeFrom: number;
  constructor(resumeFrom: number, reason: string) {
    super("CONTEXT_LOST", `upper segment lost context from position ${resumeFrom}: ${reason}`);
    this.name = "ContextLostError";
    this.resumeFrom = resumeFrom;
  }
}

/** The caller did not prove who it is: a missing or unknown API key, a revoked or wrong certificate. */
export class UnauthenticatedError extends TandemError {
  constructor(message: string) {
    super("UNAUTHENTICATED", message);
    this.name = "UnauthenticatedError";
  }
}

/** The call lost a race it started: a newer stream of the same session took it over. */
export class AbortedError extends TandemError {
  constructor(message: string) {
    super("ABORTED", message);
    this.name = "AbortedError";
  }
}

// ── Load and peers ────────────────────────────────────────────────────────────────────

/** The receiver is at capacity for `resource`; the caller may try later or elsewhere. */
export class ResourceExhaustedError extends TandemError {
  readonly resource: string;
  constructor(resource: string, message: string) {
    super("RESOURCE_EXHAUSTED", `${resource}: ${message}`);
    this.name = "ResourceExhaustedError";
    this.resource = resource;
  }
}

/** A peer could not answer: unreachable, past its deadline, shutting down. */
export class UnavailableError extends TandemError {
  constructor(message: string, options?: ErrorOptions) {
    super("UNAVAILABLE", message, options);
    this.name = "UnavailableError";
  }
}

export class CancelledError extends TandemError {
  constructor(message: string) {
    super("CANCELLED", message);
    this.name = "CancelledError";
  }
}

// ── The model's files ─────────────────────────────────────────────────────────────────

/** A checkpoint file is unreadable or malformed (bad header, truncated data, bad JSON). */
export class CheckpointError extends TandemError {
  readonly file: string;
  constructor(file: string, message: string, options?: ErrorOptions) {
    super("CHECKPOINT_INVALID", `${file}: ${message}`, options);
    this.name = "CheckpointError";
    this.file = file;
  }
}

/** A model's config.json is missing a field, has a wrong type, or describes an unsupported model. */
export class ModelConfigError extends TandemError {
  readonly file: string;
  readonly key: string;
  constructor(file: string, key: string, message: string) {
    super("MODEL_CONFIG_INVALID", `${file}: "${key}" ${message}`);
    this.name = "ModelConfigError";
    this.file = file;
    this.key = key;
  }
}

/** A tensor the config requires is absent from the checkpoint. */
export class TensorMissingError extends TandemError {
  readonly file: string;
  readonly tensor: string;
  constructor(file: string, tensor: string) {
    super("TENSOR_MISSING", `${file}: tensor "${tensor}" is missing`);
    this.name = "TensorMissingError";
    this.file = file;
    this.tensor = tensor;
  }
}

/** A tensor exists but its shape or dtype does not match what the config implies. */
export class TensorMismatchError extends TandemError {
  readonly file: string;
  readonly tensor: string;
  constructor(file: string, tensor: string, message: string) {
    super("TENSOR_MISMATCH", `${file}: tensor "${tensor}" ${message}`);
    this.name = "TensorMismatchError";
    this.file = file;
    this.tensor = tensor;
  }
}

/** A feature the engine does not implement (an architecture, a dtype, an option). */
export class UnsupportedError extends TandemError {
  constructor(message: string) {
    super("UNSUPPORTED", message);
    this.name = "UnsupportedError";
  }
}

// ── Cluster records, graphs, invariants ───────────────────────────────────────────────

/** A record read from NATS (a node heartbeat, a placement map, the lease) fails its schema. */
export class RecordInvalidError extends TandemError {
  readonly bucket: string;
  readonly key: string;
  constructor(bucket: string, key: string, message: string, options?: ErrorOptions) {
    super("RECORD_INVALID", `${bucket}/${key}: ${message}`, options);
    this.name = "RecordInvalidError";
    this.bucket = bucket;
    this.key = key;
  }
}

/** A segment graph cannot be written to or read from the graph cache. */
export class GraphIoError extends TandemError {
  readonly path: string;
  constructor(path: string, message: string, options?: ErrorOptions) {
    super("GRAPH_IO", `${path}: ${message}`, options);
    this.name = "GraphIoError";
    this.path = path;
  }
}

/** An invariant of Tandem's own code does not hold: a bug, never the caller's fault. */
export class InternalError extends TandemError {
  constructor(message: string, options?: ErrorOptions) {
    super("INTERNAL", message, options);
    this.name = "InternalError";
  }
}
