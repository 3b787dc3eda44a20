/**
 * Errors raised by the runtime. One class per condition, each with a stable `code`
 * so callers (the gRPC layers, the CLI) can map them without parsing messages.
 */

export type RuntimeErrorCode =
  | "CHECKPOINT_INVALID"
  | "CONFIG_INVALID"
  | "TENSOR_MISSING"
  | "TENSOR_MISMATCH"
  | "UNSUPPORTED"
  | "INVALID_ARGUMENT"
  | "SESSION_NOT_FOUND"
  | "CODEC_INVALID";

export class RuntimeError extends Error {
  readonly code: RuntimeErrorCode;
  constructor(code: RuntimeErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "RuntimeError";
    this.code = code;
  }
}

/** A checkpoint file is unreadable or malformed (bad header, truncated data, bad JSON). */
export class CheckpointError extends RuntimeError {
  readonly file: string;
  constructor(file: string, message: string, options?: { cause?: unknown }) {
    super("CHECKPOINT_INVALID", `${file}: ${message}`, options);
    this.name = "CheckpointError";
    this.file = file;
  }
}

/** config.json is missing a field, has a wrong type, or describes an unsupported model. */
export class ConfigError extends RuntimeError {
  readonly file: string;
  readonly key: string;
  constructor(file: string, key: string, message: string) {
    super("CONFIG_INVALID", `${file}: "${key}" ${message}`);
    this.name = "ConfigError";
    this.file = file;
    this.key = key;
  }
}

/** A tensor the config requires is absent from the checkpoint. */
export class TensorMissingError extends RuntimeError {
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
export class TensorMismatchError extends RuntimeError {
  readonly file: string;
  readonly tensor: string;
  constructor(file: string, tensor: string, message: string) {
    super("TENSOR_MISMATCH", `${file}: tensor "${tensor}" ${message}`);
    this.name = "TensorMismatchError";
    this.file = file;
    this.tensor = tensor;
  }
}

/** A feature the runtime does not implement (an architecture, a dtype, an option). */
export class UnsupportedError extends RuntimeError {
  constructor(message: string) {
    super("UNSUPPORTED", message);
    this.name = "UnsupportedError";
  }
}

/** A caller passed a bad argument; `field` names it. */
export class InvalidArgumentError extends RuntimeError {
  readonly field: string;
  constructor(field: string, message: string) {
    super("INVALID_ARGUMENT", `${field}: ${message}`);
    this.name = "InvalidArgumentError";
    this.field = field;
  }
}

export class SessionNotFoundError extends RuntimeError {
  readonly sessionId: string;
  constructor(sessionId: string) {
    super("SESSION_NOT_FOUND", `session "${sessionId}" does not exist`);
    this.name = "SessionNotFoundError";
    this.sessionId = sessionId;
  }
}

/** A hidden-state payload cannot be decoded (wrong size, unknown codec, bad scale). */
export class CodecError extends RuntimeError {
  constructor(message: string) {
    super("CODEC_INVALID", message);
    this.name = "CodecError";
  }
}
