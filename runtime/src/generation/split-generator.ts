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
import { exitSignalAt, type SegmentSessions, type SegmentStep } from "../engine/segment-sessions.ts";
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
  /**
   * Have the upper side check the edge's tokens at [verifyFrom, start + count) (tokenIds
   * carries them) and answer at the first it disagrees with. @default none checked
   */
  verifyFrom?: number;
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
  /** Where the token goes: the frame's end, or (verifying) the first edge token the upper side disagreed with. */
  position: number;
  token: number;
  prob: number;
  /** When the frame asked for them. */
  logprobs?: TokenLogprobs;
}

export type TokenSource = "edge" | "cloud" | "edge_fallback";

export interface GeneratedToken {
  kind: "token";
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

/**
 * (Verify "rollback") The tokens yielded at `position` and after it are withdrawn: the
 * cloud answers the token there differently. The tokens that follow replace them.
 */
export interface Rollback {
  kind: "rollback";
  position: number;
}

export type GenerationItem = GeneratedToken | Rollback;

/**
 * Whether the cloud checks the edge's tokens (verified decoding):
 * - `none`: tokens answered at an exit are final (CE-CoLLM's collaborative decoding).
 * - `rollback`: tokens are yielded as soon as the edge has them; the cloud checks them
 *   in the frames the edge sends anyway (an escalation), every `maxDraftTokens`
 *   unchecked tokens (without waiting for the answer) and at the end; where it answers
 *   one differently a Rollback is yielded, the edge and the cloud drop that position and
 *   what followed, and generation goes on from the cloud's token. The tokens that stand
 *   at the end are the ones the whole model answers.
 * - `exact`: the edge drafts tokens (while its exits are confident, at most
 *   `maxDraftTokens`), the cloud checks them in one round trip, and only checked tokens
 *   are yielded: the output is the whole model's, token for token (greedy, or sampled
 *   with a seed: each position's draw is a hash of (seed, position) on both sides, so
 *   the edge's draft is accepted exactly when the cloud draws the same token).
 */
export const VERIFY_MODES = ["none", "rollback", "exact"] as const;
export type VerifyMode = (typeof VERIFY_MODES)[number];

export const DEFAULT_GENERATE_OPTIONS = {
  maxTokens: 64,
  verify: "none",
  /**
   * Per verified mode. EXACT checks a run of drafts per round trip, and a longer run means
   * fewer trips: on the demo model at 3 of 6 layers, 16 cut them from 0.22 to 0.18 per
   * token and saved more cloud time than 8; 32 saved about as much as 16 while the cloud
   * ran more rejected drafts (the collab bench's by_draft_limit).
   * ROLLBACK's limit is how many tokens may stream unchecked, so how much text a rollback
   * can withdraw: it stays short.
   */
  maxDraftTokens: { exact: 16, rollback: 8 },
  unreachableRetryMs: 15_000,
} as const;

/** The draft limit a request with `verify` gets when it names none (`none` drafts nothing; it gets EXACT's). */
export function defaultMaxDraftTokens(verify: VerifyMode): number {
  return verify === "rollback"
    ? DEFAULT_GENERATE_OPTIONS.maxDraftTokens.rollback
    : DEFAULT_GENERATE_OPTIONS.maxDraftTokens.exact;
}

/** The most tokens a request may have the edge draft before the cloud checks them. */
export const MAX_DRAFT_TOKENS = 64;

/**
 * The most edge tokens one frame may have checked (a protocol limit: each checked token
 * is a row of the worker's head, logits and all). A run of unchecked tokens longer than
 * this (fallback tokens while the cloud was away) is checked in several frames.
 */
export const MAX_CHECKED_TOKENS = MAX_DRAFT_TOKENS;

export interface GenerateOptions {
  /** @default 64 */
  maxTokens?: number;
  /** Generation stops after emitting one of these (e.g. the model's EOS). */
  stopTokenIds?: number[];
  /** @default greedy */
  sampling?: SamplingOptions;
  /** Report each token's log-probabilities with this many alternatives. @default none */
  topLogprobs?: number;
  /** @default "none" */
  verify?: VerifyMode;
  /** Verified modes: the most edge tokens before the cloud checks them. @default 16 (EXACT), 8 (ROLLBACK) */
  maxDraftTokens?: number;
  /**
   * Verify "exact": how long to keep asking a cloud that cannot be reached (a worker
   * restarting, a session moving) before failing UNAVAILABLE; the edge cannot answer
   * alone without breaking the mode's promise. @default 15000
   */
  unreachableRetryMs?: number;
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
  /** Verified modes: edge tokens the cloud checked, those it answered alike, and tokens withdrawn by rollbacks. */
  draftedTokens: number;
  acceptedTokens: number;
  rolledBackTokens: number;
  /** Wall time in the lower segment and waiting on the upper one, ms. */
  lowerMs: number;
  upperMs: number;
}

/** How many times one escalation follows a ContextLost before giving up to the fallback. */
const MAX_REPLAYS = 2;

/** A check of the edge's tokens on its way (verify "rollback"), answered while the edge goes on. */
interface PendingCheck {
  /** The first token it checks; the last is the one at the frame's end, compared with the cloud's answer there. */
  verifyFrom: number;
  /** Tokens it checks. */
  drafted: number;
  answer: Promise<UpperAnswer>;
  /** Set once the answer (or its failure) has arrived. */
  settled?: { answer: UpperAnswer } | { error: unknown };
}

type CheckOutcome =
  { kind: "agreed" } | { kind: "failed" } | { kind: "rolled-back"; step: SegmentStep } | { kind: "ended" };

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
    draftedTokens: 0,
    acceptedTokens: 0,
    rolledBackTokens: 0,
    lowerMs: 0,
    upperMs: 0,
  };
  /** Split-layer hidden states of every position so far, [positions, hidden]. */
  private history = new Float32Array(0);
  /** Token ids of every position run through the lower segment (prompt, then generated). */
  private readonly tokenIds: number[] = [];
  /** The tokens yielded and standing, by position: the sequence as the client sees it. */
  private readonly sequence: number[] = [];
  /** Who answered each generated token of `sequence` (from the prompt's end). */
  private readonly sources: TokenSource[] = [];
  private promptTokens = 0;
  private positions = 0;
  /** Positions the upper side has confirmed holding. */
  private confirmed = 0;
  /** Tokens at positions below this are the prompt's, the cloud's, or checked by it. */
  private verifiedUpTo = 0;
  private finishing = false;

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

  /**
   * Ends the generation after the token just yielded, as a stop sequence does: in
   * "rollback" mode the tokens not yet checked are checked first, and a rollback among
   * them goes on generating from there.
   */
  finish(): void {
    this.finishing = true;
  }

  async *generate(promptIds: number[], options: GenerateOptions = {}): AsyncGenerator<GenerationItem> {
    const maxTokens = options.maxTokens ?? DEFAULT_GENERATE_OPTIONS.maxTokens;
    const sampling = options.sampling ?? GREEDY;
    const verify = options.verify ?? DEFAULT_GENERATE_OPTIONS.verify;
    validateSampling(sampling);
    if (promptIds.length === 0) throw new InvalidArgumentError("prompt", "must hold at least one token");
    if (!VERIFY_MODES.includes(verify))
      throw new InvalidArgumentError(
        "verify",
        `must be one of ${VERIFY_MODES.join(", ")}, got ${String(verify)}`,
      );
    const maxDraft = options.maxDraftTokens ?? defaultMaxDraftTokens(verify);
    if (!Number.isInteger(maxDraft) || maxDraft < 1 || maxDraft > MAX_DRAFT_TOKENS)
      throw new InvalidArgumentError(
        "max_draft_tokens",
        `must be an integer in [1, ${MAX_DRAFT_TOKENS}], got ${maxDraft}`,
      );
    if (verify !== "none" && !this.upper)
      throw new FailedPreconditionError(
        "verify",
        "checking the edge's tokens needs the cloud, and there is none",
      );
    if (!isGreedy(sampling) && !this.lower.model.spec.logits) {
      throw new FailedPreconditionError(
        "sampling",
        "the lower segment was built without logits, so it can only answer greedy",
      );
    }
    this.stats.promptTokens = promptIds.length;
    this.promptTokens = promptIds.length;
    this.sequence.push(...promptIds);
    this.verifiedUpTo = promptIds.length;
    const run: RunOptions = {
      end: promptIds.length + maxTokens,
      stop: new Set(options.stopTokenIds ?? []),
      sampling,
      topLogprobs: options.topLogprobs,
      maxDraft,
      unreachableRetryMs: options.unreachableRetryMs ?? DEFAULT_GENERATE_OPTIONS.unreachableRetryMs,
    };
    this.lower.open(this.sessionId);
    try {
      const step = await this.timedLower(promptIds);
      if (verify === "exact") yield* this.exact(step, run);
      else if (verify === "rollback") yield* this.withRollback(step, run);
      else yield* this.unverified(step, run);
    } finally {
      this.lower.release(this.sessionId);
    }
  }

  /** generate() in a mode that never withdraws a token (verify "none" or "exact"): its tokens. */
  async *tokens(
    promptIds: number[],
    options: GenerateOptions & { verify?: "none" | "exact" } = {},
  ): AsyncGenerator<GeneratedToken> {
    for await (const item of this.generate(promptIds, options)) if (item.kind === "token") yield item;
  }

  /** CE-CoLLM: each token answered at a confident exit, or by the cloud. */
  private async *unverified(step: SegmentStep, run: RunOptions): AsyncGenerator<GenerationItem> {
    for (;;) {
      const token = await this.answer(step, run);
      yield this.emit(token);
      if (this.ends(token, run)) return;
      step = await this.timedLower([token.token]);
    }
  }

  /** Verify "exact": rounds of drafted tokens, each checked by the cloud before it is yielded. */
  private async *exact(step: SegmentStep, run: RunOptions): AsyncGenerator<GenerationItem> {
    for (;;) {
      const base = this.positions;
      const drafts: GeneratedToken[] = [];
      for (;;) {
        const signals = this.signals(step);
        const deepest = deepestExit(signals);
        if (!deepest) break;
        const confident = this.policy.decide(signals).exit;
        const draft = this.local(step, confident ?? deepest, "edge", run);
        drafts.push(draft);
        const last = run.stop.has(draft.token) || draft.position + 1 >= run.end;
        if (last || !confident || drafts.length >= run.maxDraft) break;
        step = await this.timedLower([draft.token]);
      }
      this.stats.draftedTokens += drafts.length;
      // The drafts whose predecessors the frame carries are checked by the cloud; the
      // last one is compared with the cloud's answer after the frame.
      const answer = await this.escalateUntilAnswered(run, base < this.positions ? base : undefined);
      const at = answer.position;
      for (const draft of drafts.slice(0, at - base)) {
        this.stats.acceptedTokens++;
        yield this.emit(draft);
        if (this.finishing) return;
      }
      if (at < this.positions) await this.rewind(at);
      const draftThere = drafts[at - base];
      let token: GeneratedToken;
      if (draftThere?.token === answer.token) {
        this.stats.acceptedTokens++;
        token = draftThere;
      } else {
        token = this.cloudToken(answer);
      }
      this.verifiedUpTo = at + 1;
      yield this.emit(token);
      if (this.ends(token, run)) return;
      step = await this.timedLower([token.token]);
    }
  }

  /**
   * Verify "rollback": tokens as CE-CoLLM answers them, checked afterwards; a token the
   * cloud answers differently is withdrawn (Rollback) with what followed it.
   */
  private async *withRollback(step: SegmentStep, run: RunOptions): AsyncGenerator<GenerationItem> {
    let check: PendingCheck | undefined;
    for (;;) {
      let token: GeneratedToken;
      const confident = this.policy.decide(this.signals(step)).exit;
      if (confident) {
        token = this.local(step, confident, "edge", run);
      } else {
        // The cloud answers this one, and its frame checks the edge's tokens before it: a
        // check on its way is applied first, and (a frame checks at most
        // MAX_CHECKED_TOKENS) a longer unchecked run, fallback tokens, a frame at a time.
        const outcome = yield* this.checkUntil(MAX_CHECKED_TOKENS, check, run);
        check = undefined;
        if (outcome.kind === "ended") return;
        if (outcome.kind === "rolled-back") {
          step = outcome.step;
          continue;
        }
        // Still away with more than a frame to check: this token is the edge's too, as CE-CoLLM falls back.
        if (outcome.kind === "failed" && this.unchecked() > MAX_CHECKED_TOKENS) {
          token = this.local(step, deepestExit(this.signals(step))!, "edge_fallback", run);
          yield this.emit(token);
          if (this.ends(token, run)) return;
          step = await this.timedLower([token.token]);
          continue;
        }
        const answered = await this.checkedAnswer(step, run);
        if (answered.rollback) yield this.withdraw(answered.rollback.position);
        token = answered.token;
      }
      yield this.emit(token);
      if (this.ends(token, run)) {
        // At the end every token is checked: what the client keeps is the cloud's (or, the
        // cloud unreachable, the edge's as it answered them).
        const outcome = yield* this.checkUntil(0, check, run);
        check = undefined;
        if (outcome.kind !== "rolled-back") return;
        step = outcome.step;
        continue;
      }
      if (!check && this.unchecked() >= run.maxDraft) check = this.startCheck(run);
      step = await this.timedLower([token.token]);
      if (check?.settled) {
        const outcome = yield* this.settle(check, run);
        check = undefined;
        if (outcome.kind === "ended") return;
        if (outcome.kind === "rolled-back") step = outcome.step;
      }
    }
  }

  /**
   * Checks the tokens yielded and not yet checked until at most `limit` remain, a frame at
   * a time (`check`: one on its way, applied first). Stops at the first outcome other than
   * "agreed"; "agreed" when done.
   */
  private async *checkUntil(
    limit: number,
    check: PendingCheck | undefined,
    run: RunOptions,
  ): AsyncGenerator<GenerationItem, CheckOutcome> {
    for (;;) {
      check ??= this.unchecked() > limit ? this.startCheck(run) : undefined;
      if (!check) return { kind: "agreed" };
      const outcome = yield* this.settle(await this.awaitCheck(check), run);
      if (outcome.kind !== "agreed") return outcome;
      check = undefined;
    }
  }

  /** Positions of edge tokens yielded and not yet checked. */
  private unchecked(): number {
    return this.sequence.length - this.verifiedUpTo;
  }

  /**
   * Sends the positions the cloud lacks, asking it to check the tokens yielded since the
   * last check (the last one against its answer after the frame), and goes on without
   * waiting for the answer.
   */
  private startCheck(run: RunOptions): PendingCheck {
    const end = Math.min(this.positions, this.verifiedUpTo + MAX_CHECKED_TOKENS);
    const check: PendingCheck = {
      verifyFrom: this.verifiedUpTo,
      drafted: end + 1 - this.verifiedUpTo,
      answer: this.escalate(run, end, this.verifiedUpTo < end ? this.verifiedUpTo : undefined),
    };
    check.answer.then(
      (answer) => (check.settled = { answer }),
      (error: unknown) => (check.settled = { error }),
    );
    return check;
  }

  private async awaitCheck(check: PendingCheck): Promise<PendingCheck> {
    const waitStart = performance.now();
    await check.answer.catch(() => undefined);
    this.stats.upperMs += performance.now() - waitStart;
    return check;
  }

  /**
   * Applies a check's answer: the tokens it confirmed are checked ("agreed"); at a token it
   * answers differently, yields the Rollback and the cloud's token there, and says how the
   * generation goes on ("rolled-back" with the lower segment's step after that token, or
   * "ended" when that token ends it). A check that found the cloud unreachable leaves its
   * tokens unchecked ("failed").
   */
  private async *settle(check: PendingCheck, run: RunOptions): AsyncGenerator<GenerationItem, CheckOutcome> {
    const settled = check.settled!;
    if ("error" in settled) {
      if (!isUnreachable(settled.error)) throw settled.error;
      return { kind: "failed" };
    }
    const { answer } = settled;
    this.stats.draftedTokens += check.drafted;
    const at = answer.position;
    const agreed = this.sequence[at] === answer.token;
    this.stats.acceptedTokens += at - check.verifyFrom + (agreed ? 1 : 0);
    if (agreed) {
      this.verifiedUpTo = Math.max(this.verifiedUpTo, at + 1);
      return { kind: "agreed" };
    }
    yield this.withdraw(at);
    if (at < this.positions) await this.rewind(at);
    const token = this.cloudToken(answer);
    this.verifiedUpTo = at + 1;
    yield this.emit(token);
    if (this.ends(token, run)) return { kind: "ended" };
    return { kind: "rolled-back", step: await this.timedLower([token.token]) };
  }

  /**
   * The token at this.positions answered by the cloud, the frame checking the edge's
   * unchecked tokens before it; a rollback when the cloud answers one of them differently.
   * With the cloud unreachable the deepest exit answers (edge_fallback), as in CE-CoLLM.
   */
  private async checkedAnswer(
    step: SegmentStep,
    run: RunOptions,
  ): Promise<{ token: GeneratedToken; rollback?: Rollback }> {
    const deepest = deepestExit(this.signals(step));
    const checking = this.verifiedUpTo < this.positions ? this.verifiedUpTo : undefined;
    const verifyFrom = this.verifiedUpTo;
    try {
      const answer = await this.timedEscalate(run, checking);
      const at = answer.position;
      this.stats.acceptedTokens += at - verifyFrom;
      this.stats.draftedTokens += this.positions - verifyFrom;
      this.verifiedUpTo = at + 1;
      if (at === this.positions) return { token: this.cloudToken(answer) };
      await this.rewind(at);
      return { token: this.cloudToken(answer), rollback: { kind: "rollback", position: at } };
    } catch (error) {
      if (!isUnreachable(error) || !deepest) throw error;
      return { token: this.local(step, deepest, "edge_fallback", run) };
    }
  }

  private ends(token: GeneratedToken, run: RunOptions): boolean {
    return this.finishing || run.stop.has(token.token) || token.position + 1 >= run.end;
  }

  /** Records a token as yielded (the sequence the client sees, counted by source) and returns it. */
  private emit(token: GeneratedToken): GeneratedToken {
    this.sequence.push(token.token);
    this.sources.push(token.source);
    this.count(token.source, 1);
    return token;
  }

  /** Withdraws the yielded tokens from `position` on; generation goes on from there. */
  private withdraw(position: number): Rollback {
    for (const source of this.sources.slice(position - this.promptTokens)) this.count(source, -1);
    this.stats.rolledBackTokens += this.sequence.length - position;
    this.sequence.length = position;
    this.sources.length = position - this.promptTokens;
    this.finishing = false;
    return { kind: "rollback", position };
  }

  private count(source: TokenSource, delta: number): void {
    if (source === "edge") this.stats.edgeTokens += delta;
    else if (source === "cloud") this.stats.cloudTokens += delta;
    else this.stats.fallbackTokens += delta;
  }

  /** Drops the lower segment's positions from `length` on, and what the generator kept of them. */
  private async rewind(length: number): Promise<void> {
    await this.lower.truncate(this.sessionId, length);
    this.positions = length;
    this.tokenIds.length = length;
    this.confirmed = Math.min(this.confirmed, length);
  }

  private async timedLower(ids: number[]): Promise<SegmentStep> {
    const start = performance.now();
    this.tokenIds.push(...ids);
    try {
      const step = await this.lower.forward(this.sessionId, { ids });
      if (step.hidden) this.keep(step.hidden, step.count);
      else this.positions += step.count;
      return step;
    } catch (error) {
      this.tokenIds.length = this.positions;
      throw error;
    } finally {
      this.stats.lowerMs += performance.now() - start;
    }
  }

  private signals(step: SegmentStep): ExitSignal[] {
    return step.exits.map((e) => exitSignalAt(e, e.token.length - 1));
  }

  /** The token at this.positions answered at an exit of the edge. */
  private local(step: SegmentStep, signal: ExitSignal, source: TokenSource, run: RunOptions): GeneratedToken {
    const position = this.positions;
    const exit = step.exits.find((e) => e.afterLayer === signal.afterLayer)!;
    const answer = answerFromHead(
      exit,
      run.sampling,
      position,
      this.lower.model.config.vocabSize,
      run.topLogprobs,
      { ids: this.tokenIds, promptTokens: this.promptTokens },
    );
    return {
      kind: "token",
      token: answer.token,
      position,
      source,
      exitLayer: signal.afterLayer,
      confidence: answer.prob,
      logprobs: answer.logprobs,
    };
  }

  private cloudToken(answer: UpperAnswer): GeneratedToken {
    return {
      kind: "token",
      token: answer.token,
      position: answer.position,
      source: "cloud",
      exitLayer: this.lower.model.config.numLayers,
      confidence: answer.prob,
      logprobs: answer.logprobs,
    };
  }

  private async answer(step: SegmentStep, run: RunOptions): Promise<GeneratedToken> {
    const signals = this.signals(step);
    const decision = this.policy.decide(signals);
    if (decision.exit) return this.local(step, decision.exit, "edge", run);
    const deepest = deepestExit(signals);
    if (!this.upper) {
      if (!deepest) throw new InvalidArgumentError("policy", "deferred with no exit and no upper segment");
      return this.local(step, deepest, "edge", run);
    }
    try {
      return this.cloudToken(await this.timedEscalate(run, undefined));
    } catch (error) {
      if (!isUnreachable(error) || !deepest) throw error;
      return this.local(step, deepest, "edge_fallback", run);
    }
  }

  /**
   * Escalates, retrying a cloud that cannot be reached (backing off from 50 ms to 1 s)
   * for up to run.unreachableRetryMs; a restarted worker gets the context replayed.
   */
  private async escalateUntilAnswered(run: RunOptions, verifyFrom: number | undefined): Promise<UpperAnswer> {
    const deadline = performance.now() + run.unreachableRetryMs;
    for (let delay = 50; ; delay = Math.min(2 * delay, 1000)) {
      try {
        return await this.timedEscalate(run, verifyFrom);
      } catch (error) {
        if (!isUnreachable(error) || performance.now() + delay > deadline) throw error;
        const waitStart = performance.now();
        await new Promise((resolve) => setTimeout(resolve, delay));
        this.stats.upperMs += performance.now() - waitStart;
      }
    }
  }

  private async timedEscalate(run: RunOptions, verifyFrom: number | undefined): Promise<UpperAnswer> {
    const waitStart = performance.now();
    try {
      return await this.escalate(run, this.positions, verifyFrom);
    } finally {
      this.stats.upperMs += performance.now() - waitStart;
    }
  }

  /**
   * Sends the unconfirmed positions before `end` and asks for the token at `end` (with
   * `verifyFrom`, the cloud checks the tokens from there on and may answer at an earlier
   * position); replays on lost context.
   */
  private async escalate(run: RunOptions, end: number, verifyFrom: number | undefined): Promise<UpperAnswer> {
    const hidden = this.lower.model.config.hiddenSize;
    const { sampling, topLogprobs } = run;
    for (let attempt = 0; ; attempt++) {
      const start = this.confirmed;
      const count = end - start;
      try {
        this.stats.escalations++;
        this.stats.positionsSent += count;
        const answer = await this.upper!.extend({
          start,
          hidden: this.history.subarray(start * hidden, end * hidden),
          count,
          wantToken: true,
          sampling,
          topLogprobs,
          // Only penalties and checks need the upper side to know the tokens: other frames
          // stay as small as their hidden states (a request's sampling holds for its whole session).
          ...(hasPenalties(sampling) || verifyFrom !== undefined
            ? { tokenIds: this.tokenIds.slice(start, end), promptTokens: this.promptTokens }
            : {}),
          ...(verifyFrom !== undefined ? { verifyFrom: Math.max(verifyFrom, start + 1) } : {}),
        });
        if (!answer) throw new UnavailableError("upper segment returned no token for a token request");
        // The upper side holds the frame, or (a check it disagreed with) up to the token it answered.
        this.confirmed = answer.position;
        return answer;
      } catch (error) {
        if (!(error instanceof ContextLostError) || attempt >= MAX_REPLAYS) throw error;
        this.stats.contextReplays++;
        this.confirmed = Math.min(error.resumeFrom, end);
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

interface RunOptions {
  /** The sequence's length at max_tokens. */
  end: number;
  stop: Set<number>;
  sampling: SamplingOptions;
  topLogprobs?: number;
  maxDraft: number;
  unreachableRetryMs: number;
}

/** Errors after which the edge answers alone (CE-CoLLM's fallback) rather than failing. */
function isUnreachable(error: unknown): boolean {
  return error instanceof UnavailableError || error instanceof ContextLostError;
}
