/**
 * The escalation protocol between the lower segment of a split (the edge) and its upper
 * segment (a cloud worker, or one in-process): its one home. The edge's cloud session,
 * the worker's service and the in-process LocalUpperSegment all build, check and apply
 * messages with these functions, so the rules below hold the same everywhere.
 *
 * Messages: tandem.v1.CloudWorker/Escalate (proto/tandem/v1/cloud_worker.proto), one
 * bidirectional stream per session.
 *
 *   OpenSession   session_id 1..maxSessionIdLength of A-Z a-z 0-9 . _ : - (a UUID fits); weights_hash, split_layer
 *                 and hidden_size equal to the upper side's (FAILED_PRECONDITION naming the
 *                 field); codec one of fp32/fp16/int8/int4 (INVALID_ARGUMENT).
 *                 → SessionOpened{context_length: positions held, worker_id}
 *   HiddenStateFrame
 *                 positions [start, start + count): count in [1, maxFrameTokens],
 *                 start + count ≤ the model's positions, payload exactly the codec's
 *                 size for count × hidden, temperature, top_p and top_k within
 *                 SAMPLING_LIMITS, top_logprobs ≤ MAX_TOP_LOGPROBS, token_ids one per
 *                 position (or none) inside the vocabulary (INVALID_ARGUMENT naming
 *                 `frame.<field>`). The worker keeps the token ids with the context
 *                 (truncated with it); penalties are computed from them, and a frame
 *                 asking for penalties on a context whose ids are not all known is
 *                 FAILED_PRECONDITION.
 *   Applying a frame (applyFrame): start = held → run it; start < held → drop the
 *                 positions from start on and run it (the edge resent them: frames are
 *                 idempotent); start > held → ContextLost{resume_from: held}, and nothing
 *                 changes, so the edge replays from there.
 *   Verifying     verify_from in [start + 1, start + count] (0: none), checking at most
 *                 MAX_CHECKED_TOKENS (64) positions, with want_token and
 *                 token_ids (INVALID_ARGUMENT naming frame.verify_from): the head
 *                 evaluates positions verify_from − 1 … start + count − 1 (a segment of
 *                 head positions "tail"); each edge token at [verify_from, start + count)
 *                 is compared with the answer the worker gives there (below); at the
 *                 first difference the context is truncated to that position and the
 *                 reply is the worker's token there. → TokenReply{position: that position}
 *   Answering     with want_token, the token after the frame's last position, from the
 *                 final head (answerFromHead): temperature 0 → the arg max and its
 *                 probability; otherwise a sample seeded by (seed, position) at that
 *                 temperature and top-p, which needs the head's logits (a segment built
 *                 without them refuses with FAILED_PRECONDITION, never answers greedy
 *                 instead). → TokenReply{request_id, position: start + count, token, prob,
 *                 logprobs: with `logprobs`, the token's log-probability under the head's
 *                 untempered distribution and its top_logprobs most probable tokens}
 *   Replies, checked by the edge (checkReply): a token reply's position is the frame's
 *                 start + count (or, verifying, in [verify_from, start + count]), its token inside the vocabulary, its prob in [0, 1], its
 *                 logprobs present exactly when asked for, ≤ 0, with as many alternatives
 *                 as asked, each inside the vocabulary; a
 *                 ContextLost's resume_from is not past the frame's start; an opened
 *                 session's context_length not past what the edge has produced. A worker
 *                 that breaks these is treated as unavailable.
 *   CloseSession  releases the session's KV on the worker.
 *   Ownership     a cloud worker in a cluster serves only the sessions the placement map
 *                 gives it: an open (once checked) or a frame of another worker's session
 *                 gets SessionMoved{address, worker_id} instead, nothing is applied, and
 *                 the stream ends; the edge reopens the session at that address (within
 *                 MAX_REDIRECTS per frame) and replays what the owner lacks.
 */
import {
  ContextLostError,
  FailedPreconditionError,
  HOST_PORT_PATTERN,
  InvalidArgumentError,
  UnavailableError,
  type ErrorOptions,
} from "@tandem/common";
import type {
  CloudMessage__Output,
  EdgeMessage__Output,
  HiddenStateCodecName,
  HiddenStateFrame__Output,
  OpenSession__Output,
} from "@tandem/proto";
import type { Checkpoint } from "../checkpoint/model-weights.ts";
import { getCodec, type CodecName, type HiddenStateCodec } from "../codec/hidden-state-codec.ts";
import type { SegmentStep } from "../engine/segment-sessions.ts";
import {
  MAX_TOP_LOGPROBS,
  penaltyFromWire,
  validateSampling,
  type SamplingOptions,
  type TokenLogprobs,
} from "../generation/sampler.ts";
import { MAX_CHECKED_TOKENS, type UpperFrame } from "../generation/split-generator.ts";

export interface EscalationLimits {
  /** Largest frame, in positions. @default 4096 */
  maxFrameTokens: number;
  /** Longest session id, in characters. @default 128 */
  maxSessionIdLength: number;
}

export const DEFAULT_ESCALATION_LIMITS: EscalationLimits = { maxFrameTokens: 4096, maxSessionIdLength: 128 };

/** What both sides of a split must agree on. */
export interface SplitIdentity {
  /** sha256 of the checkpoint (config.json and weights). */
  weightsHash: string;
  /** First layer of the upper segment. */
  split: number;
  hiddenSize: number;
  vocabSize: number;
  /** Longest sequence the model takes. */
  maxPositions: number;
}

/** A checkpoint split at `split`, as both sides of the escalation protocol name it. */
export function splitIdentityOf(checkpoint: Checkpoint, split: number): SplitIdentity {
  return {
    weightsHash: checkpoint.weightsHash,
    split,
    hiddenSize: checkpoint.config.hiddenSize,
    vocabSize: checkpoint.config.vocabSize,
    maxPositions: checkpoint.config.maxPositions,
  };
}

const CODEC_TO_WIRE: Record<CodecName, HiddenStateCodecName> = {
  fp32: "HIDDEN_STATE_CODEC_FP32",
  fp16: "HIDDEN_STATE_CODEC_FP16",
  int8: "HIDDEN_STATE_CODEC_INT8",
  int4: "HIDDEN_STATE_CODEC_INT4",
  "int8-rotated": "HIDDEN_STATE_CODEC_INT8_ROTATED",
  "int4-rotated": "HIDDEN_STATE_CODEC_INT4_ROTATED",
};

export function codecToWire(codec: CodecName): HiddenStateCodecName {
  return CODEC_TO_WIRE[codec];
}

/** The codec a wire enum names; anything else (UNSPECIFIED, an unknown number) is refused. */
export function codecFromWire(wire: unknown, field = "open.codec"): CodecName {
  const entry = Object.entries(CODEC_TO_WIRE).find(([, value]) => value === wire);
  if (!entry)
    throw new InvalidArgumentError(
      field,
      `must be one of ${Object.values(CODEC_TO_WIRE).join(", ")}, got ${JSON.stringify(wire)}`,
    );
  return entry[0] as CodecName;
}

// ── Edge → upper ──────────────────────────────────────────────────────────────────────

export function openMessage(
  sessionId: string,
  identity: SplitIdentity,
  codec: CodecName,
  modelId = "",
): EdgeMessage__Output {
  return {
    message: "open",
    open: {
      sessionId,
      modelId,
      weightsHash: identity.weightsHash,
      splitLayer: identity.split,
      codec: codecToWire(codec),
      hiddenSize: identity.hiddenSize,
    },
  };
}

export interface FrameRequest extends UpperFrame {
  /** Echoed in the reply, so the edge can match answers to frames. */
  requestId: bigint | number;
}

/**
 * The frame as the upper side receives it. Sampling fields are float32 on the wire, so
 * they are rounded here: an in-process upper segment then sees exactly what a remote one
 * would.
 */
export function frameMessage(
  codec: HiddenStateCodec,
  hiddenSize: number,
  frame: FrameRequest,
): EdgeMessage__Output {
  const payload = codec.encode(frame.hidden, frame.count, hiddenSize);
  return {
    message: "frame",
    frame: {
      start: frame.start,
      count: frame.count,
      payload: Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength),
      wantToken: frame.wantToken,
      requestId: String(frame.requestId),
      temperature: Math.fround(frame.sampling.temperature),
      topP: Math.fround(frame.sampling.topP),
      seed: frame.sampling.seed.toString(),
      topK: frame.sampling.topK ?? 0,
      logprobs: frame.topLogprobs !== undefined,
      topLogprobs: frame.topLogprobs ?? 0,
      // Set by the edge's cloud link when it traces the escalation.
      traceparent: "",
      tracestate: "",
      tokenIds: frame.tokenIds ?? [],
      promptTokens: frame.promptTokens ?? 0,
      repetitionPenalty: Math.fround(frame.sampling.repetitionPenalty ?? 0),
      presencePenalty: Math.fround(frame.sampling.presencePenalty ?? 0),
      frequencyPenalty: Math.fround(frame.sampling.frequencyPenalty ?? 0),
      verifyFrom: frame.verifyFrom ?? 0,
    },
  };
}

export const CLOSE_MESSAGE: EdgeMessage__Output = { message: "close", close: {} };

// ── Upper side: checking and applying ────────────────────────────────────────────────

/** What a session id may hold: a UUID fits, and never "/", which separates a device's namespace. */
const SESSION_ID_PATTERN = /^[A-Za-z0-9._:-]+$/;

/**
 * The key a worker keeps a session's context under: the calling device's namespace, then
 * the session id, so one device's id names nothing of another's. Without a device (a
 * plaintext worker) the session id alone.
 */
export function sessionContextKey(deviceId: string | undefined, sessionId: string): string {
  return deviceId === undefined ? sessionId : `${deviceId}/${sessionId}`;
}

/** The session id in a context key (what placement shards by). */
export function sessionIdOfContextKey(key: string): string {
  return key.slice(key.indexOf("/") + 1);
}

export interface OpenedSession {
  sessionId: string;
  codec: HiddenStateCodec;
}

export function validateOpen(
  open: OpenSession__Output,
  upper: SplitIdentity,
  limits = DEFAULT_ESCALATION_LIMITS,
): OpenedSession {
  if (
    !open.sessionId ||
    open.sessionId.length > limits.maxSessionIdLength ||
    !SESSION_ID_PATTERN.test(open.sessionId)
  )
    throw new InvalidArgumentError(
      "open.session_id",
      `must hold 1 to ${limits.maxSessionIdLength} of A-Z a-z 0-9 . _ : -`,
    );
  if (open.weightsHash !== upper.weightsHash)
    throw new FailedPreconditionError(
      "open.weights_hash",
      `the upper segment runs ${upper.weightsHash.slice(0, 16)}…, the edge has ${open.weightsHash.slice(0, 16) || "(empty)"}…`,
    );
  if (open.splitLayer !== upper.split)
    throw new FailedPreconditionError(
      "open.split_layer",
      `the upper segment runs layers from ${upper.split}, the edge split at ${open.splitLayer}`,
    );
  if (open.hiddenSize !== upper.hiddenSize)
    throw new FailedPreconditionError(
      "open.hidden_size",
      `the model has ${upper.hiddenSize}, the edge sent ${open.hiddenSize}`,
    );
  return { sessionId: open.sessionId, codec: getCodec(codecFromWire(open.codec)) };
}

export interface DecodedFrame {
  start: number;
  count: number;
  hidden: Float32Array;
  wantToken: boolean;
  requestId: string;
  sampling: SamplingOptions;
  /** Log-probabilities to answer with, and how many alternatives; undefined: none. */
  topLogprobs?: number;
  /** The token id of each position, when the edge sent them (else empty). */
  tokenIds: number[];
  /** Positions of the sequence that are its prompt. */
  promptTokens: number;
  /** First position whose (edge) token to check; undefined: none. */
  verifyFrom?: number;
  /** Payload bytes, for accounting. */
  bytes: number;
}

/**
 * Bounds of a frame's W3C trace context: a traceparent is 55 characters in version 00 and
 * may grow in later versions; a tracestate holds at most 512 (W3C's limit, which the
 * edge's propagator keeps).
 */
const TRACE_CONTEXT_LIMITS = { traceparent: 256, tracestate: 512 } as const;

/**
 * What is wrong with a frame's trace context, if anything: an error naming the field, for
 * decodeFrame to throw and for a tracer to read the context only when it is undefined.
 */
export function traceContextError(frame: {
  traceparent: string;
  tracestate: string;
}): InvalidArgumentError | undefined {
  for (const field of ["traceparent", "tracestate"] as const)
    if (frame[field].length > TRACE_CONTEXT_LIMITS[field])
      return new InvalidArgumentError(
        `frame.${field}`,
        `must be at most ${TRACE_CONTEXT_LIMITS[field]} characters, got ${frame[field].length}`,
      );
  return undefined;
}

export function decodeFrame(
  frame: HiddenStateFrame__Output,
  codec: HiddenStateCodec,
  upper: SplitIdentity,
  limits = DEFAULT_ESCALATION_LIMITS,
): DecodedFrame {
  const { count, start } = frame;
  if (!Number.isInteger(count) || count < 1 || count > limits.maxFrameTokens)
    throw new InvalidArgumentError("frame.count", `must be in [1, ${limits.maxFrameTokens}], got ${count}`);
  if (start + count > upper.maxPositions)
    throw new InvalidArgumentError(
      "frame.start",
      `positions up to ${start + count} exceed the model's ${upper.maxPositions}`,
    );
  const expected = codec.encodedBytes(count, upper.hiddenSize);
  if (frame.payload.length !== expected)
    throw new InvalidArgumentError(
      "frame.payload",
      `${codec.name} for ${count} positions of ${upper.hiddenSize} needs ${expected} bytes, got ${frame.payload.length}`,
    );
  let seed: bigint;
  try {
    seed = BigInt(frame.seed);
  } catch {
    throw new InvalidArgumentError(
      "frame.seed",
      `must be an unsigned 64-bit integer, got ${JSON.stringify(frame.seed)}`,
    );
  }
  const sampling: SamplingOptions = {
    temperature: frame.temperature,
    topP: frame.topP,
    seed,
    topK: frame.topK,
    repetitionPenalty: penaltyFromWire(frame.repetitionPenalty),
    presencePenalty: penaltyFromWire(frame.presencePenalty),
    frequencyPenalty: penaltyFromWire(frame.frequencyPenalty),
  };
  if (frame.tokenIds.length !== 0 && frame.tokenIds.length !== count)
    throw new InvalidArgumentError(
      "frame.token_ids",
      `must hold one id per position (${count}) or none, got ${frame.tokenIds.length}`,
    );
  const outside = frame.tokenIds.findIndex((id) => id >= upper.vocabSize);
  if (outside >= 0)
    throw new InvalidArgumentError(
      `frame.token_ids[${outside}]`,
      `${frame.tokenIds[outside]} is outside the vocabulary [0, ${upper.vocabSize})`,
    );
  if (frame.verifyFrom !== 0) {
    if (!(frame.verifyFrom > start && frame.verifyFrom <= start + count))
      throw new InvalidArgumentError(
        "frame.verify_from",
        `must be 0 or in [${start + 1}, ${start + count}] (a position of the frame after its first, or its end), got ${frame.verifyFrom}`,
      );
    if (start + count - frame.verifyFrom > MAX_CHECKED_TOKENS)
      throw new InvalidArgumentError(
        "frame.verify_from",
        `checks at most ${MAX_CHECKED_TOKENS} tokens per frame, got ${start + count - frame.verifyFrom}`,
      );
    if (!frame.wantToken || frame.tokenIds.length !== count)
      throw new InvalidArgumentError(
        "frame.verify_from",
        "checking the edge's tokens needs want_token and the token id of each position (token_ids)",
      );
  }
  validateSampling(sampling, "frame");
  const traceError = traceContextError(frame);
  if (traceError) throw traceError;
  if (frame.topLogprobs > MAX_TOP_LOGPROBS || (frame.topLogprobs > 0 && !frame.logprobs))
    throw new InvalidArgumentError(
      "frame.top_logprobs",
      `must be at most ${MAX_TOP_LOGPROBS}, and only with logprobs; got ${frame.topLogprobs}`,
    );
  let hidden: Float32Array;
  try {
    hidden = codec.decode(frame.payload, count, upper.hiddenSize);
  } catch (error) {
    throw new InvalidArgumentError("frame.payload", (error as Error).message, { cause: error });
  }
  return {
    start,
    count,
    hidden,
    wantToken: frame.wantToken,
    requestId: frame.requestId,
    sampling,
    topLogprobs: frame.logprobs ? frame.topLogprobs : undefined,
    tokenIds: frame.tokenIds,
    promptTokens: frame.promptTokens,
    verifyFrom: frame.verifyFrom === 0 ? undefined : frame.verifyFrom,
    bytes: frame.payload.length,
  };
}

/** A session's context on the upper side, as far as applying frames needs it. */
export interface FrameTarget {
  /** Positions held. */
  length(): number;
  /** Drops positions from `length` on. */
  truncate(length: number): Promise<void>;
  /**
   * Runs positions [length(), length() + count); a segment whose head positions are
   * "tail" evaluates its head on the last `headPositions` of them.
   */
  forward(hidden: Float32Array, count: number, headPositions?: number): Promise<SegmentStep>;
}

/** A frame as the upper side applies it to a session's context. */
export interface FrameToApply {
  start: number;
  hidden: Float32Array;
  count: number;
  /** One per position, or none (SessionTokens). @default none */
  tokenIds?: readonly number[];
  /** The head evaluates the frame's last this many positions (a segment of positions "tail"). @default 1 */
  headPositions?: number;
}

/** Applies positions [start, start + count): see the protocol's rules above. */
export async function applyFrame(
  target: FrameTarget,
  frame: FrameToApply,
  sessionId: string,
): Promise<SegmentStep> {
  const held = target.length();
  if (frame.start > held)
    throw new ContextLostError(
      held,
      `holds ${held} positions of session ${sessionId}, the frame starts at ${frame.start}`,
    );
  if (frame.start < held) await target.truncate(frame.start);
  return target.forward(frame.hidden, frame.count, frame.headPositions);
}

// ── Upper → edge ──────────────────────────────────────────────────────────────────────

// Replies are built in the shape the edge receives them (a valid message to send, too),
// so an in-process upper segment's replies are read exactly as a remote one's.

export function openedReply(contextLength: number, workerId: string): CloudMessage__Output {
  return { message: "opened", opened: { contextLength, workerId } };
}

export function tokenReply(
  requestId: string,
  position: number,
  answer: { token: number; prob: number; logprobs?: TokenLogprobs },
): CloudMessage__Output {
  const logprobs = answer.logprobs && {
    logprob: Math.fround(answer.logprobs.logprob),
    top: answer.logprobs.top.map((t) => ({ token: t.token, logprob: Math.fround(t.logprob) })),
  };
  return {
    message: "token",
    token: {
      requestId,
      position,
      token: answer.token,
      prob: Math.fround(answer.prob),
      logprobs: logprobs ?? null,
    },
  };
}

export function contextLostReply(error: ContextLostError, requestId: string): CloudMessage__Output {
  return {
    message: "contextLost",
    contextLost: { resumeFrom: error.resumeFrom, reason: error.message, requestId },
  };
}

export function movedReply(owner: { workerId: string; address: string }): CloudMessage__Output {
  return { message: "moved", moved: { address: owner.address, workerId: owner.workerId } };
}

/**
 * Redirects an edge follows for one frame before it takes the workers to disagree (their
 * placement maps are changing under them) and treats the cloud as unavailable for now.
 */
export const MAX_REDIRECTS = 4;

/**
 * The session lives on another worker, which the edge should reopen it at. Not a failure:
 * the redirect of the ownership rule, caught by the edge's cloud session and never sent as
 * a status (so outside the error hierarchy, whose codes all map to one).
 */
export class SessionMovedError extends Error {
  constructor(
    readonly address: string,
    readonly workerId: string,
  ) {
    super(`the session is served by worker "${workerId}" at ${address}`);
    this.name = "SessionMovedError";
  }
}

/**
 * A SessionMoved reply as the edge acts on it (an address it can dial; an invalid reply
 * otherwise), or undefined for any other reply. It may come in place of any reply.
 */
export function sessionMovedOf(reply: CloudMessage__Output): SessionMovedError | undefined {
  if (reply.message !== "moved" || !reply.moved) return undefined;
  const { address, workerId } = reply.moved;
  if (!HOST_PORT_PATTERN.test(address))
    throw new InvalidReplyError(`moved.address ${JSON.stringify(address.slice(0, 64))} is not host:port`);
  return new SessionMovedError(address, workerId);
}

/** What a reply to a frame means for the edge. */
export type FrameOutcome =
  | {
      kind: "token";
      requestId: string;
      /** Where the token goes: the frame's end, or (verifying) the first edge token the upper side answered differently. */
      position: number;
      token: number;
      prob: number;
      logprobs?: TokenLogprobs;
    }
  | { kind: "context-lost"; requestId: string; error: ContextLostError };

/** A reply the edge cannot trust: treated as the worker being unavailable. */
export class InvalidReplyError extends UnavailableError {
  constructor(message: string, options?: ErrorOptions) {
    super(`the upper segment sent an invalid reply: ${message}`, options);
    this.name = "InvalidReplyError";
  }
}

/**
 * Checks a reply to the frame `sent` (as the wire delivers it) and says what it means:
 * a token, or lost context to replay from.
 */
export function checkFrameReply(
  reply: CloudMessage__Output,
  sent: { start: number; count: number; topLogprobs?: number; verifyFrom?: number },
  vocabSize: number,
): FrameOutcome {
  if (reply.message === "token" && reply.token) {
    const { token, prob, position, requestId } = reply.token;
    const end = sent.start + sent.count;
    const earliest = sent.verifyFrom ?? end;
    if (!(Number.isInteger(position) && position >= earliest && position <= end))
      throw new InvalidReplyError(
        `token.position ${position}, expected ${earliest === end ? end : `one in [${earliest}, ${end}]`}`,
      );
    if (!Number.isInteger(token) || token < 0 || token >= vocabSize)
      throw new InvalidReplyError(`token.token ${token} is outside the vocabulary [0, ${vocabSize})`);
    if (!(prob >= 0 && prob <= 1)) throw new InvalidReplyError(`token.prob ${prob} is not in [0, 1]`);
    const logprobs = checkLogprobs(reply.token.logprobs ?? undefined, sent.topLogprobs, vocabSize);
    return { kind: "token", requestId, position, token, prob, logprobs };
  }
  if (reply.message === "contextLost" && reply.contextLost) {
    const { resumeFrom, reason, requestId } = reply.contextLost;
    if (!Number.isInteger(resumeFrom) || resumeFrom > sent.start)
      throw new InvalidReplyError(
        `context_lost.resume_from ${resumeFrom} is past the frame's start ${sent.start}`,
      );
    return { kind: "context-lost", requestId, error: new ContextLostError(resumeFrom, reason) };
  }
  const moved = sessionMovedOf(reply);
  if (moved) throw moved;
  throw new InvalidReplyError(`expected a token or context_lost, got ${reply.message ?? "nothing"}`);
}

/** A reply's logprobs: there exactly when asked for, with the alternatives asked for, each a log-probability. */
function checkLogprobs(
  logprobs: { logprob: number; top: { token: number; logprob: number }[] } | undefined,
  asked: number | undefined,
  vocabSize: number,
): TokenLogprobs | undefined {
  if (asked === undefined) {
    if (logprobs) throw new InvalidReplyError("token.logprobs was not asked for");
    return undefined;
  }
  if (!logprobs) throw new InvalidReplyError("token.logprobs is missing");
  if (!(logprobs.logprob <= 0))
    throw new InvalidReplyError(`token.logprobs.logprob ${logprobs.logprob} is not ≤ 0`);
  if (logprobs.top.length !== Math.min(asked, vocabSize))
    throw new InvalidReplyError(`token.logprobs.top holds ${logprobs.top.length}, asked for ${asked}`);
  for (const t of logprobs.top)
    if (!(Number.isInteger(t.token) && t.token >= 0 && t.token < vocabSize && t.logprob <= 0))
      throw new InvalidReplyError(`token.logprobs.top holds token ${t.token} at ${t.logprob}`);
  return {
    logprob: logprobs.logprob,
    top: logprobs.top.map((t) => ({ token: t.token, logprob: t.logprob })),
  };
}

/**
 * Checks the upper side's answer to OpenSession; returns the positions it holds. Throws
 * SessionMovedError when the worker says another one owns the session.
 */
export function checkOpenedReply(reply: CloudMessage__Output, positionsProduced: number): number {
  const moved = sessionMovedOf(reply);
  if (moved) throw moved;
  if (reply.message !== "opened" || !reply.opened)
    throw new InvalidReplyError(`expected opened, got ${reply.message ?? "nothing"}`);
  const held = reply.opened.contextLength;
  if (!Number.isInteger(held) || held < 0 || held > positionsProduced)
    throw new InvalidReplyError(
      `opened.context_length ${held} is more than the ${positionsProduced} positions sent`,
    );
  return held;
}

/** Which reply a frame's answer carries the request id of, for matching on the edge. */
export function replyRequestId(reply: CloudMessage__Output): string | undefined {
  return reply.token?.requestId ?? reply.contextLost?.requestId;
}

/** The edge message's kind, or undefined when it carries none of the three. */
export function edgeMessageKind(message: EdgeMessage__Output): "open" | "frame" | "close" | undefined {
  if (message.message === "open" && message.open) return "open";
  if (message.message === "frame" && message.frame) return "frame";
  if (message.message === "close") return "close";
  return undefined;
}
