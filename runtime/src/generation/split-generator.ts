/**
 * The collaborative decoding loop of CE-CoLLM, independent of transport: the lower
 * segment (on the edge) runs every token and reports its exits; the exit policy answers
 * locally or defers to the upper segment (in the cloud), which needs the split-layer
 * hidden state of every earlier position. Hidden states of locally answered positions
 * are queued and sent with the next deferral, so nothing is sent twice.
 *
 *   prompt ─► lower [0,s) ─► exits ─► policy ─┬─► answer at the exit (edge)
 *                              │               └─► upper [s,L) with queued hidden ─► answer (cloud)
 *                              └─► hidden state queued for the upper segment
 */
import { randomUUID } from "node:crypto";
import type { ExitPolicy, ExitSignal } from "../exits/exit-policy.ts";
import { InvalidArgumentError } from "../errors.ts";
import type { SegmentSessions, SegmentStep } from "../engine/segment-sessions.ts";

/** The rest of the model past the split: in-process or a remote cloud worker. */
export interface UpperSegment {
  /**
   * Appends hidden states of the next `count` positions (row-major [count, hidden]) to
   * the session's context. With `wantToken`, answers the token that follows the last one.
   */
  extend(hidden: Float32Array, count: number, wantToken: boolean): Promise<UpperAnswer | undefined>;
}

export interface UpperAnswer {
  token: number;
  prob: number;
}

export type TokenSource = "edge" | "cloud" | "edge_fallback";

export interface GeneratedToken {
  token: number;
  /** Position the token will occupy in the sequence. */
  position: number;
  source: TokenSource;
  /** Layers that produced the answer (numLayers for the cloud's final head). */
  exitLayer: number;
  /** Probability of the token at the layer that answered it. */
  confidence: number;
}

export interface GenerateOptions {
  /** @default 64 */
  maxTokens?: number;
  /** Generation stops after emitting one of these (e.g. the model's EOS). */
  stopTokenIds?: number[];
}

export interface SplitGeneratorStats {
  edgeTokens: number;
  cloudTokens: number;
  fallbackTokens: number;
  escalations: number;
  /** Positions whose hidden states were sent upward (each exactly once). */
  positionsSent: number;
}

/** One generator per session: it owns the session's queue of unsent hidden states. */
export class SplitGenerator {
  readonly stats: SplitGeneratorStats = {
    edgeTokens: 0,
    cloudTokens: 0,
    fallbackTokens: 0,
    escalations: 0,
    positionsSent: 0,
  };
  private pending: Float32Array[] = [];
  private pendingCount = 0;

  /**
   * @param lower sessions over layers [0, s) with exits and `outputHidden` (unless it is the whole model)
   * @param upper the rest of the model, or undefined when the lower segment ends with the final head
   */
  constructor(
    private readonly lower: SegmentSessions,
    private readonly upper: UpperSegment | undefined,
    private readonly policy: ExitPolicy,
    private readonly sessionId: string = randomUUID(),
  ) {
    const spec = lower.model.spec;
    if (upper && !spec.outputHidden)
      throw new InvalidArgumentError(
        "lower",
        "segment must output its hidden state to feed an upper segment",
      );
    if (!upper && !spec.finalHead && spec.exits.length === 0)
      throw new InvalidArgumentError("lower", "segment has no exit to answer from");
  }

  async *generate(promptIds: number[], options: GenerateOptions = {}): AsyncGenerator<GeneratedToken> {
    const sessionId = this.sessionId;
    const maxTokens = options.maxTokens ?? 64;
    const stop = new Set(options.stopTokenIds ?? []);
    if (promptIds.length === 0) throw new InvalidArgumentError("prompt", "must hold at least one token");
    this.lower.open(sessionId);
    try {
      let step = await this.lower.forward(sessionId, { ids: promptIds });
      for (let i = 0; i < maxTokens; i++) {
        const token = await this.answer(step);
        yield token;
        if (stop.has(token.token) || i === maxTokens - 1) break;
        step = await this.lower.forward(sessionId, { ids: [token.token] });
      }
    } finally {
      this.lower.release(sessionId);
    }
  }

  private async answer(step: SegmentStep): Promise<GeneratedToken> {
    if (step.hidden) this.queue(step.hidden, step.count);
    const position = step.start + step.count;
    const signals: ExitSignal[] = step.exits.map((e) => ({
      afterLayer: e.afterLayer,
      token: e.token[e.token.length - 1],
      prob: e.prob[e.prob.length - 1],
      margin: e.margin[e.margin.length - 1],
      entropy: e.entropy[e.entropy.length - 1],
    }));
    const decision = this.policy.decide(signals);
    if (decision.exit) return this.local(decision.exit, position, "edge");
    const deepest = signals.reduce<ExitSignal | undefined>(
      (best, s) => (!best || s.afterLayer > best.afterLayer ? s : best),
      undefined,
    );
    if (!this.upper) {
      if (!deepest) throw new InvalidArgumentError("policy", "deferred with no exit and no upper segment");
      return this.local(deepest, position, "edge");
    }
    const hidden = this.takePending();
    const answer = await this.upper.extend(hidden.data, hidden.count, true);
    if (!answer) throw new Error("upper segment returned no token for a token request");
    this.stats.escalations++;
    this.stats.positionsSent += hidden.count;
    this.stats.cloudTokens++;
    return {
      token: answer.token,
      position,
      source: "cloud",
      exitLayer: this.lower.model.config.numLayers,
      confidence: answer.prob,
    };
  }

  private local(exit: ExitSignal, position: number, source: TokenSource): GeneratedToken {
    if (source === "edge") this.stats.edgeTokens++;
    else this.stats.fallbackTokens++;
    return { token: exit.token, position, source, exitLayer: exit.afterLayer, confidence: exit.prob };
  }

  private queue(hidden: Float32Array, count: number): void {
    this.pending.push(hidden);
    this.pendingCount += count;
  }

  private takePending(): { data: Float32Array; count: number } {
    const data = new Float32Array(this.pending.reduce((sum, h) => sum + h.length, 0));
    let offset = 0;
    for (const h of this.pending) {
      data.set(h, offset);
      offset += h.length;
    }
    const count = this.pendingCount;
    this.pending = [];
    this.pendingCount = 0;
    return { data, count };
  }
}

/** An upper segment running in this process (tests, benchmarks, `tandem generate --split`). */
export class LocalUpperSegment implements UpperSegment {
  constructor(
    private readonly sessions: SegmentSessions,
    private readonly sessionId: string,
  ) {
    if (!sessions.model.spec.finalHead)
      throw new InvalidArgumentError("upper", "segment must end with the final head");
    if (!sessions.has(sessionId)) sessions.open(sessionId);
  }

  async extend(hidden: Float32Array, count: number, wantToken: boolean): Promise<UpperAnswer | undefined> {
    const step = await this.sessions.forward(this.sessionId, { hidden, count });
    if (!wantToken) return undefined;
    const head = step.exits[step.exits.length - 1];
    return { token: head.token[head.token.length - 1], prob: head.prob[head.prob.length - 1] };
  }

  close(): void {
    this.sessions.release(this.sessionId);
  }
}
