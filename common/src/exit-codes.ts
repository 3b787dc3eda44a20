/**
 * The exit code of a program or command that stops on an error, by error code: 2 when
 * what the user gave cannot work (a flag, a setting, a model directory), 1 when something
 * else failed (a server unreachable, an internal fault). Errors that are not Tandem's
 * are bugs and keep their stack trace.
 */
import type { ErrorCode } from "./errors.ts";

export const EXIT_CODE_BY_ERROR: Record<ErrorCode, 1 | 2> = {
  INVALID_ARGUMENT: 2,
  FAILED_PRECONDITION: 2,
  CODEC_INVALID: 2,
  USAGE: 2,
  UNAUTHENTICATED: 2,
  CONFIG_VALUE: 2,
  CHECKPOINT_INVALID: 2,
  MODEL_CONFIG_INVALID: 2,
  TENSOR_MISSING: 2,
  TENSOR_MISMATCH: 2,
  UNSUPPORTED: 2,
  SESSION_NOT_FOUND: 1,
  CONTEXT_LOST: 1,
  RESOURCE_EXHAUSTED: 1,
  UNAVAILABLE: 1,
  CANCELLED: 1,
  ABORTED: 1,
  RECORD_INVALID: 1,
  GRAPH_IO: 1,
  INTERNAL: 1,
};
