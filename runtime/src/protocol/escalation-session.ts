/**
 * The upper side of one escalation stream: takes the edge's messages in order (open,
 * frames, close), checks each with the protocol's rules before it touches any state,
 * applies frames to the session's context and answers. Transport-free: the cloud
 * worker's gRPC service feeds it messages from the wire, LocalUpperSegment feeds it the
 * same messages in-process.
 *
 * A bad message throws (InvalidArgumentError / FailedPreconditionError naming the field)
 * and leaves the session's context as it was; the caller ends the stream.
 */
import { ContextLostError, FailedPreconditionError, InvalidArgumentError } from "@tandem/common";
import type { CloudMessage__Output, EdgeMessage__Output } from "@tandem/proto";
import type { CodecName } from "../codec/hidden-state-codec.ts";
import type { ExitResult, SegmentStep } from "../engine/segment-sessions.ts";
import { answerFromHead, hasPenalties } from "../generation/sampler.ts";
import {
  DEFAULT_ESCALATION_LIMITS,
  contextLostReply,
  decodeFrame,
  edgeMessageKind,
  openedReply,
  sessionContextKey,
  tokenReply,
  validateOpen,
  type EscalationLimits,
  type FrameToApply,
  type OpenedSession,
  type SplitIdentity,
} from "./escalation-protocol.ts";

/** The sessions' contexts on the upper side (a worker's context manager, or local sessions). */
export interface SessionContexts {
  /** Positions held for the session; 0 for one never seen or evicted. */
  contextLength(sessionId: string): number;
  /**
   * Applies a frame (applyFrame's rules); throws ContextLostError when it cannot. Its
   * token ids (one per position, or none) are kept with the context (SessionTokens).
   */
  append(sessionId: string, frame: FrameToApply): Promise<SegmentStep>;
  /** Drops the context's positions from `length` on (a drafted token the head disagreed with, and what followed it). */
  truncate(sessionId: string, length: number): Promise<void>;
  /** The token ids of the context's positions, as far as they are known without a gap. */
  tokenHistory(sessionId: string): readonly number[];
  release(sessionId: string): void;
}

export interface UpperSideIdentity extends SplitIdentity {
  /** Named in SessionOpened, for logs on the edge. */
  workerId: string;
}

/** What happened on a stream, for a worker's counters. */
export interface EscalationCounters {
  frames: number;
  positions: number;
  tokens: number;
  bytesReceived: number;
  /** bytesReceived by the codec of the frames' sessions (for the worker's metrics). */
  bytesReceivedByCodec: Partial<Record<CodecName, number>>;
  /** Frames answered ContextLost: the edge replays from where the context ends. */
  contextLost: number;
  /** Edge tokens checked and found to be the model's own answer (verified decoding). */
  verifiedTokens: number;
  /** Checks that found an edge token the model answers differently (the context was truncated there). */
  verifyRejections: number;
}

/** The head's answer at one of its evaluated positions, as a head of that one position. */
function headRow(head: ExitResult, row: number, vocabSize: number): ExitResult {
  // One evaluated position (every frame that checks nothing): the head as it is.
  if (head.token.length === 1) return head;
  return {
    afterLayer: head.afterLayer,
    token: [head.token[row]],
    prob: [head.prob[row]],
    margin: [head.margin[row]],
    entropy: [head.entropy[row]],
    klPrevious: head.klPrevious && [head.klPrevious[row]],
    logits: head.logits?.subarray(row * vocabSize, (row + 1) * vocabSize),
  };
}

export class EscalationSession {
  private opened?: OpenedSession & { contextKey: string };

  /**
   * `deviceId`: the authenticated device calling (mutual TLS); its sessions live in its own
   * namespace of `contexts` (sessionContextKey). Undefined for a plaintext peer.
   */
  constructor(
    private readonly upper: UpperSideIdentity,
    private readonly contexts: SessionContexts,
    private readonly limits: EscalationLimits = DEFAULT_ESCALATION_LIMITS,
    private readonly counters?: EscalationCounters,
    private readonly deviceId?: string,
  ) {}

  /** The session id once the stream has opened one. */
  get sessionId(): string | undefined {
    return this.opened?.sessionId;
  }

  /**
   * Handles one message; resolves with the reply to send, if any.
   *
   * `claim`, when given, is awaited for an open once it has been checked and before it
   * applies, with the key the session's context is kept under (the device's namespace and
   * the session id): a cloud worker takes the session from an older stream there, so an
   * open it would refuse takes nothing. A claim that throws refuses the open.
   */
  async handle(
    message: EdgeMessage__Output,
    claim?: (contextKey: string) => Promise<void>,
  ): Promise<CloudMessage__Output | undefined> {
    switch (edgeMessageKind(message)) {
      case "open": {
        if (this.opened) throw new FailedPreconditionError("open", "the stream already has a session");
        const opened = validateOpen(message.open!, this.upper, this.limits);
        const contextKey = sessionContextKey(this.deviceId, opened.sessionId);
        if (claim) await claim(contextKey);
        this.opened = { ...opened, contextKey };
        return openedReply(this.contexts.contextLength(contextKey), this.upper.workerId);
      }
      case "frame":
        return this.frame(message);
      case "close":
        if (this.opened) this.contexts.release(this.opened.contextKey);
        this.opened = undefined;
        return undefined;
      default:
        throw new InvalidArgumentError("message", "must be open, frame or close");
    }
  }

  private async frame(message: EdgeMessage__Output): Promise<CloudMessage__Output | undefined> {
    if (!this.opened) throw new FailedPreconditionError("frame", "the stream must start with open");
    const frame = decodeFrame(message.frame!, this.opened.codec, this.upper, this.limits);
    if (this.counters) {
      this.counters.frames++;
      this.counters.bytesReceived += frame.bytes;
      const codec = this.opened.codec.name;
      this.counters.bytesReceivedByCodec[codec] =
        (this.counters.bytesReceivedByCodec[codec] ?? 0) + frame.bytes;
    }
    const end = frame.start + frame.count;
    let step: SegmentStep;
    try {
      step = await this.contexts.append(this.opened.contextKey, {
        start: frame.start,
        hidden: frame.hidden,
        count: frame.count,
        tokenIds: frame.tokenIds,
        // The rows answering the checked positions, and the last one (the token after the frame).
        headPositions: frame.verifyFrom === undefined ? undefined : end - frame.verifyFrom + 1,
      });
    } catch (error) {
      if (error instanceof ContextLostError) {
        if (this.counters) this.counters.contextLost++;
        return contextLostReply(error, frame.requestId);
      }
      throw error;
    }
    if (this.counters) this.counters.positions += frame.count;
    if (!frame.wantToken) return undefined;
    const head = step.exits[step.exits.length - 1];
    // Only penalties read the token history: other frames copy none of it.
    const history = hasPenalties(frame.sampling)
      ? this.contexts.tokenHistory(this.opened.contextKey)
      : undefined;
    const answerAt = (position: number, row: number, topLogprobs?: number) =>
      answerFromHead(
        headRow(head, row, this.upper.vocabSize),
        frame.sampling,
        position,
        this.upper.vocabSize,
        topLogprobs,
        history && {
          ids: position === history.length ? history : history.slice(0, position),
          promptTokens: frame.promptTokens,
        },
      );
    // The head's rows answer positions from verifyFrom on (the last row: the frame's end).
    const first = frame.verifyFrom ?? end;
    let position = end;
    for (let at = first; at < end; at++) {
      if (answerAt(at, at - first).token !== frame.tokenIds[at - frame.start]) {
        position = at;
        break;
      }
    }
    const answer = answerAt(position, position - first, frame.topLogprobs);
    if (this.counters) {
      this.counters.tokens++;
      if (frame.verifyFrom !== undefined) {
        this.counters.verifiedTokens += position - first;
        if (position < end) this.counters.verifyRejections++;
      }
    }
    // The edge's token there was not the model's: the context ends before it.
    if (position < end) await this.contexts.truncate(this.opened.contextKey, position);
    return tokenReply(frame.requestId, position, answer);
  }
}
