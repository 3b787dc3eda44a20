/**
 * The one retry policy: which failures are worth another try, and how long to wait
 * before it. The edge's cloud link backs off by it (a circuit that stays open while a
 * worker is down, so tokens fall back at once instead of waiting out a deadline each),
 * and batch jobs are retried by it (BullMQ attempts with jittered exponential backoff);
 * a failure that no retry can fix (bad data, a bad checkpoint) fails at once.
 *
 * Backoff is exponential with jitter: attempt n waits initialDelayMs·2^(n−1), capped at
 * maxDelayMs, then drawn uniformly from [(1 − jitter)·d, d], so clients that failed
 * together do not come back together.
 */
import { TandemError, type ErrorCode } from "./errors.ts";

/** Whether a failure with this code can succeed when tried again later. */
export const RETRYABLE_BY_CODE: Record<ErrorCode, boolean> = {
  // The peer or its load: later, or elsewhere, it may work.
  UNAVAILABLE: true,
  RESOURCE_EXHAUSTED: true,
  CONTEXT_LOST: true,
  INTERNAL: true,
  GRAPH_IO: true,
  RECORD_INVALID: true,
  // What was asked, or the files it names, cannot work however often it is tried.
  INVALID_ARGUMENT: false,
  FAILED_PRECONDITION: false,
  CODEC_INVALID: false,
  USAGE: false,
  UNAUTHENTICATED: false,
  // A newer stream of the same session holds it now: retrying the old one would fight it.
  ABORTED: false,
  CONFIG_VALUE: false,
  SESSION_NOT_FOUND: false,
  CANCELLED: false,
  CHECKPOINT_INVALID: false,
  MODEL_CONFIG_INVALID: false,
  TENSOR_MISSING: false,
  TENSOR_MISMATCH: false,
  UNSUPPORTED: false,
};

/** Tandem errors by their code; anything else (a crash, a lost connection) is presumed transient. */
export function isRetryable(error: unknown): boolean {
  return error instanceof TandemError ? RETRYABLE_BY_CODE[error.code] : true;
}

export interface BackoffPolicy {
  /** Tries in all, the first included (where the caller gives up at all). */
  attempts: number;
  /** Wait before the second try. */
  initialDelayMs: number;
  /** Longest wait. */
  maxDelayMs: number;
  /** Fraction of each wait drawn at random, in [0, 1]. */
  jitter: number;
}

/**
 * The edge's link to a cloud worker: stays closed for a short, growing while after a
 * failure. The cap bounds how long a session answers on the device after its worker is
 * back (a session probes it in the background, through this circuit); jitter spreads the
 * devices' probes of a returning worker over half a second.
 */
export const CLOUD_LINK_BACKOFF: BackoffPolicy = {
  attempts: Number.POSITIVE_INFINITY,
  initialDelayMs: 250,
  maxDelayMs: 1000,
  jitter: 0.5,
};

/** A batch job: three tries, a second, then two. */
export const BATCH_JOB_BACKOFF: BackoffPolicy = {
  attempts: 3,
  initialDelayMs: 1000,
  maxDelayMs: 60_000,
  jitter: 0.5,
};

/** The wait before try `attempt` + 1, after `attempt` ≥ 1 failed tries. */
export function backoffDelayMs(
  policy: BackoffPolicy,
  attempt: number,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(policy.maxDelayMs, policy.initialDelayMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(ceiling * (1 - policy.jitter * random()));
}
