/**
 * The collaborative decoding loop of CE-CoLLM, independent of transport: the lower
 * segment (on the edge) runs every token and reports its exits; the exit policy answers
 * locally or defers to the upper segment (in the cloud), which needs the split-layer
 * hidden state of every earlier position. The generator keeps those hidden states and
 * how far the upper side has confirmed them; a deferral sends only what is unconfirmed,
 * so nothing is sent twice.
 *
 *   prompt ─► lower [0,s) ─► exits ─► policy ─┬─► answer at the exit (edge)
 *                              │               └─► upper [s,L) with unsent hidden ─► answer (cloud)
 *                              └─► hidden state kept for the upper segment
 *
 * When the upper side is unreachable the deepest exit answers (marked edge_fallback) and
 * the unsent context waits; when it reports lost context, the generator replays from
 * where the upper side's context ends.
 */
import { randomUUID } from "node:crypto";
import { deepestExit, type ExitPolicy, type ExitSignal } from "../exits/exit-policy.ts";
import {
  ContextLostError,
  FailedPreconditionError,
  InvalidArgumentError,
  UnavailableError,
} from "@tandem/common";
import type { SegmentSessions, SegmentStep } from "../engine/segment-sessions.ts";
import {
  GREEDY,
  answerFromHead,
  hasPenalties,
  isGreedy,
  validateSampling,
  type SamplingOptions,
  type TokenLogprobs,
} from "./sampler.ts";

/** Positions [start, start + count) of the split-layer hidden state, on their way up. */
export interface UpperFrame {
  start: number;
  /** Row-major [count, hidden]. */
  hidden: Float32Array;
  count: number;
  /** Answer the token that follows position start + count − 1. */
  wantToken: boolean;
  /** How to answer it; greedy when the temperature is 0. */
  sampling: SamplingOptions;
  /** Return the answer's log-probabilities with this many alternatives; undefined: none. */
  topLogprobs?: number;
  /** The token ids of the frame's positions (what the hidden states stand for): penalties need them upstairs. */
  tokenIds?: number[];
  /** Positions of the sequence that are its prompt (the rest were generated). */
  promptTokens?: number;
}

/** The rest of the model past the split: in-process or a remote cloud worker. */
export interface UpperSegment {
  /**
   * Sends a frame; with `wantToken`, answers the token after it. Throws
   * ContextLostError when the upper side lacks positions before `start`, and
   * UnavailableError when it cannot be reached in time.
   */
  extend(frame: UpperFrame): Promise<UpperAnswer | undefined>;
  close(): Promise<void>;
}

export interface UpperAnswer {
  token: number;
  prob: number;
  /** When the frame asked for them. */
  logprobs?: TokenLogprobs;
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
  /** Under the layer that answered it, when asked for. */
  logprobs?: TokenLogprobs;
}

export const DEFAULT_GENERATE_OPTIONS = { maxTokens: 64 } as const;

export interface GenerateOptions {
  /** @default 64 */
  maxTokens?: number;
  /** Generation stops after emitting one of these (e.g. the model's EOS). */
  stopTokenIds?: number[];
  /** @default greedy */
  sampling?: SamplingOptions;
  /** Report each token's log-probabilities with this many alternatives. @default none */
  topLogprobs?: number;
}

export interface SplitGeneratorStats {
  promptTokens: number;
  edgeTokens: number;
  cloudTokens: number;
  fallbackTokens: number;
  escalations: number;
  /** Positions whose hidden states were sent upward (replays after a lost context count again). */
  positionsSent: number;
  contextReplays: number;
  /** Wall time in the lower segment and waiting on the upper one, ms. */
  lowerMs: number;
  upperMs: number;
}

/** How many times one escalation follows a ContextLost before giving up to the fallback. */
const MAX_REPLAYS = 2;

/** One generator per session: it owns the session's split-layer hidden states. */
export class SplitGenerator {
  readonly stats: SplitGeneratorStats = {
    promptTokens: 0,
    edgeTokens: 0,
    cloudTokens: 0,
    fallbackTokens: 0,
    escalations: 0,
    positionsSent: 0,
    contextReplays: 0,
    lowerMs: 0,
    upperMs: 0,
  };
  /** Split-layer hidden states of every position so far, [positions, hidden]. */
  private history = new Float32Array(0);
  /** Token ids of every position so far (prompt, then generated). */
  private readonly tokenIds: number[] = [];
  private promptTokens = 0;
  private positions = 0;
  /** Positions the upper side has confirmed holding. */
  private confirmed = 0;

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
    const maxTokens = options.maxTokens ?? DEFAULT_GENERATE_OPTIONS.maxTokens;
    const stop = new Set(options.stopTokenIds ?? []);
    const sampling = options.sampling ?? GREEDY;
    validateSampling(sampling);
    if (promptIds.length === 0) throw new InvalidArgumentError("prompt", "must hold at least one token");
    if (!isGreedy(sampling) && !this.lower.model.spec.logits) {
      throw new FailedPreconditionError(
        "sampling",
        "the lower segment was built without logits, so it can only answer greedy",
      );
    }
    this.stats.promptTokens = promptIds.length;
    this.promptTokens = promptIds.length;
    this.lower.open(this.sessionId);
    try {
      let step = await this.timedLower(promptIds);
      for (let i = 0; i < maxTokens; i++) {
        const token = await this.answer(step, sampling, options.topLogprobs);
        yield token;
        if (stop.has(token.token) || i === maxTokens - 1) break;
        step = await this.timedLower([token.token]);
      }
    } finally {
      this.lower.release(this.sessionId);
    }
  }

  private async timedLower(ids: number[]): Promise<SegmentStep> {
    const start = performance.now();
    this.tokenIds.push(...ids);
    try {
      return await this.lower.forward(this.sessionId, { ids });
    } finally {
      this.stats.lowerMs += performance.now() - start;
    }
  }

  private async answer(
    step: SegmentStep,
    sampling: SamplingOptions,
    topLogprobs: number | undefined,
  ): Promise<GeneratedToken> {
    if (step.hidden) this.keep(step.hidden, step.count);
    const position = step.start + step.count;
    const vocab = this.lower.model.config.vocabSize;
    const signals: ExitSignal[] = step.exits.map((e) => ({
      afterLayer: e.afterLayer,
      token: e.token[e.token.length - 1],
      prob: e.prob[e.prob.length - 1],
      margin: e.margin[e.margin.length - 1],
      entropy: e.entropy[e.entropy.length - 1],
    }));
    const local = (signal: ExitSignal, source: TokenSource): GeneratedToken => {
      if (source === "edge") this.stats.edgeTokens++;
      else this.stats.fallbackTokens++;
      const exit = step.exits.find((e) => e.afterLayer === signal.afterLayer)!;
      const answer = answerFromHead(exit, sampling, position, vocab, topLogprobs, {
        ids: this.tokenIds,
        promptTokens: this.promptTokens,
      });
      return {
        token: answer.token,
        position,
        source,
        exitLayer: signal.afterLayer,
        confidence: answer.prob,
        logprobs: answer.logprobs,
      };
    };
    const decision = this.policy.decide(signals);
    if (decision.exit) return local(decision.exit, "edge");
    const deepest = deepestExit(signals);
    if (!this.upper) {
      if (!deepest) throw new InvalidArgumentError("policy", "deferred with no exit and no upper segment");
      return local(deepest, "edge");
    }
    const waitStart = performance.now();
    try {
      const answer = await this.escalate(sampling, topLogprobs);
      this.stats.cloudTokens++;
      return {
        token: answer.token,
        position,
        source: "cloud",
        exitLayer: this.lower.model.config.numLayers,
        confidence: answer.prob,
        logprobs: answer.logprobs,
      };
    } catch (error) {
      if (!(error instanceof UnavailableError || error instanceof ContextLostError) || !deepest) throw error;
      return local(deepest, "edge_fallback");
    } finally {
      this.stats.upperMs += performance.now() - waitStart;
    }
  }

  /** Sends every unconfirmed position and asks for the next token; replays on lost context. */
  private async escalate(sampling: SamplingOptions, topLogprobs: number | undefined): Promise<UpperAnswer> {
    const hidden = this.lower.model.config.hiddenSize;
    for (let attempt = 0; ; attempt++) {
      const start = this.confirmed;
      const count = this.positions - start;
      try {
        this.stats.escalations++;
        this.stats.positionsSent += count;
        const answer = await this.upper!.extend({
          start,
          hidden: this.history.subarray(start * hidden, this.positions * hidden),
          count,
          wantToken: true,
          sampling,
          topLogprobs,
          // Only penalties need the upper side to know the tokens: other frames stay as small
          // as their hidden states (a request's sampling holds for its whole session).
          ...(hasPenalties(sampling)
            ? { tokenIds: this.tokenIds.slice(start, this.positions), promptTokens: this.promptTokens }
            : {}),
        });
        if (!answer) throw new UnavailableError("upper segment returned no token for a token request");
        this.confirmed = this.positions;
        return answer;
      } catch (error) {
        if (!(error instanceof ContextLostError) || attempt >= MAX_REPLAYS) throw error;
        this.stats.contextReplays++;
        this.confirmed = Math.min(error.resumeFrom, this.positions);
      }
    }
  }

  private keep(hidden: Float32Array, count: number): void {
    const size = this.lower.model.config.hiddenSize;
    const needed = (this.positions + count) * size;
    if (needed > this.history.length) {
      const grown = new Float32Array(Math.max(needed, this.history.length * 2));
      grown.set(this.history.subarray(0, this.positions * size));
      this.history = grown;
    }
    this.history.set(hidden, this.positions * size);
    this.positions += count;
  }
}
