/**
 * An upper segment running in this process (`tandem generate --split`, batch jobs,
 * benchmarks, tests). It speaks the escalation protocol exactly as a remote worker does:
 * each extension becomes the frame a cloud session would send (encoded with `codec`,
 * fp32 by default, so nothing is lost), goes through the same EscalationSession a
 * worker runs, and the reply is checked and read as the edge reads a worker's.
 */
import { randomUUID } from "node:crypto";
import { InvalidArgumentError } from "@tandem/common";
import { getCodec, type CodecName, type HiddenStateCodec } from "../codec/hidden-state-codec.ts";
import type { SegmentSessions, SegmentStep } from "../engine/segment-sessions.ts";
import type { UpperAnswer, UpperFrame, UpperSegment } from "../generation/split-generator.ts";
import {
  CLOSE_MESSAGE,
  applyFrame,
  checkFrameReply,
  checkOpenedReply,
  frameMessage,
  openMessage,
  type FrameTarget,
  type FrameToApply,
  type SplitIdentity,
} from "./escalation-protocol.ts";
import { SessionTokens } from "./session-tokens.ts";
import { EscalationSession, type SessionContexts } from "./escalation-session.ts";

/**
 * Applies a frame to a session of `sessions` by the protocol's rules (applyFrame),
 * opening the session on its first frame, and keeps the frame's token ids in `tokens`
 * beside the context. `forward` runs the new positions; by default the session alone (a
 * worker batches single positions across sessions instead).
 */
export async function applyFrameToSession(
  sessions: SegmentSessions,
  tokens: SessionTokens,
  sessionId: string,
  frame: FrameToApply,
  forward: FrameTarget["forward"] = (hidden, count, headPositions) =>
    sessions.forward(sessionId, { hidden, count, headPositions }),
): Promise<SegmentStep> {
  if (!sessions.has(sessionId)) sessions.open(sessionId);
  const step = await applyFrame(
    {
      length: () => sessions.length(sessionId),
      truncate: (length) => sessions.truncate(sessionId, length),
      forward,
    },
    frame,
    sessionId,
  );
  tokens.record(sessionId, frame.start, frame.count, frame.tokenIds ?? []);
  return step;
}

/** Sessions of one segment as an upper side's contexts: frames applied by the protocol's rules. */
export class LocalSessionContexts implements SessionContexts {
  private readonly tokens = new SessionTokens();

  constructor(private readonly sessions: SegmentSessions) {}

  contextLength(sessionId: string): number {
    return this.sessions.has(sessionId) ? this.sessions.length(sessionId) : 0;
  }

  append(sessionId: string, frame: FrameToApply): Promise<SegmentStep> {
    return applyFrameToSession(this.sessions, this.tokens, sessionId, frame);
  }

  async truncate(sessionId: string, length: number): Promise<void> {
    await this.sessions.truncate(sessionId, length);
    this.tokens.truncate(sessionId, length);
  }

  tokenHistory(sessionId: string): readonly number[] {
    return this.tokens.history(sessionId);
  }

  release(sessionId: string): void {
    this.sessions.release(sessionId);
    this.tokens.release(sessionId);
  }
}

export interface LocalUpperSegmentOptions {
  /** Codec the frames go through, as on the wire. @default "fp32" (lossless) */
  codec?: CodecName;
}

export class LocalUpperSegment implements UpperSegment {
  private readonly codec: HiddenStateCodec;
  private readonly identity: SplitIdentity;
  private readonly session: EscalationSession;
  private opened = false;
  private nextRequestId = 1n;

  constructor(
    private readonly sessions: SegmentSessions,
    private readonly sessionId: string = randomUUID(),
    options: LocalUpperSegmentOptions = {},
  ) {
    const { spec, config, weightsHash } = sessions.model;
    if (!spec.finalHead) throw new InvalidArgumentError("upper", "segment must end with the final head");
    this.codec = getCodec(options.codec ?? "fp32");
    this.identity = {
      weightsHash,
      split: spec.fromLayer,
      hiddenSize: config.hiddenSize,
      vocabSize: config.vocabSize,
      maxPositions: config.maxPositions,
    };
    this.session = new EscalationSession(
      { ...this.identity, workerId: "local" },
      new LocalSessionContexts(sessions),
    );
  }

  async extend(frame: UpperFrame): Promise<UpperAnswer | undefined> {
    if (!this.opened) {
      const reply = await this.session.handle(openMessage(this.sessionId, this.identity, this.codec.name));
      checkOpenedReply(reply!, frame.start + frame.count);
      this.opened = true;
    }
    const message = frameMessage(this.codec, this.identity.hiddenSize, {
      ...frame,
      requestId: this.nextRequestId++,
    });
    const reply = await this.session.handle(message);
    if (!reply) return undefined;
    const outcome = checkFrameReply(reply, frame, this.identity.vocabSize);
    if (outcome.kind === "context-lost") throw outcome.error;
    return {
      position: outcome.position,
      token: outcome.token,
      prob: outcome.prob,
      logprobs: outcome.logprobs,
    };
  }

  async close(): Promise<void> {
    if (this.opened) await this.session.handle(CLOSE_MESSAGE);
    else if (this.sessions.has(this.sessionId)) this.sessions.release(this.sessionId);
    this.opened = false;
  }
}
