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
import type { SegmentStep } from "../engine/segment-sessions.ts";
import { answerFromHead } from "../generation/sampler.ts";
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
  type OpenedSession,
  type SplitIdentity,
} from "./escalation-protocol.ts";

/** The sessions' contexts on the upper side (a worker's context manager, or local sessions). */
export interface SessionContexts {
  /** Positions held for the session; 0 for one never seen or evicted. */
  contextLength(sessionId: string): number;
  /**
   * Applies a frame (applyFrame's rules); throws ContextLostError when it cannot. `tokenIds`
   * (one per position, or none) are kept with the context (SessionTokens).
   */
  append(
    sessionId: string,
    start: number,
    hidden: Float32Array,
    count: number,
    tokenIds?: readonly number[],
  ): Promise<SegmentStep>;
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
    let step: SegmentStep;
    try {
      step = await this.contexts.append(
        this.opened.contextKey,
        frame.start,
        frame.hidden,
        frame.count,
        frame.tokenIds,
      );
    } catch (error) {
      if (error instanceof ContextLostError) {
        if (this.counters) this.counters.contextLost++;
        return contextLostReply(error, frame.requestId);
      }
      throw error;
    }
    if (this.counters) this.counters.positions += frame.count;
    if (!frame.wantToken) return undefined;
    const position = frame.start + frame.count;
    const answer = answerFromHead(
      step.exits[step.exits.length - 1],
      frame.sampling,
      position,
      this.upper.vocabSize,
      frame.topLogprobs,
      { ids: this.contexts.tokenHistory(this.opened.contextKey), promptTokens: frame.promptTokens },
    );
    if (this.counters) this.counters.tokens++;
    return tokenReply(frame.requestId, position, answer);
  }
}
