/**
 * The cloud context manager (CE-CoLLM): each session's KV cache for the worker's layers
 * [split, L), so an edge never resends context. Sessions are kept under a memory budget;
 * when it is exceeded the least recently used idle sessions are evicted, and an evicted
 * session that comes back is told to replay its context (ContextLostError).
 */
import {
  applyFrameToSession,
  SessionTokens,
  type SegmentSessions,
  type FrameToApply,
  type SegmentStep,
  type SessionContexts,
} from "@tandem/runtime";
import type { DecodeBatcher } from "./decode-batcher.ts";
import type { WorkerMetrics } from "./worker-metrics.ts";

export interface ContextManagerOptions {
  /** Memory the KV caches of all sessions may take together (each in whole blocks of positions). @default 512 MiB */
  memoryBudgetBytes?: number;
  /** Where each frame's step time is reported. @default none */
  metrics?: WorkerMetrics;
}

export const DEFAULT_CONTEXT_MANAGER_OPTIONS = { memoryBudgetBytes: 512 * 2 ** 20 } as const;

export interface ContextManagerStats {
  sessions: number;
  kvBytes: number;
  evictions: number;
}

export class ContextManager implements SessionContexts {
  /** Sessions in least-recently-used order (a Map iterates in insertion order). */
  private readonly lastUsed = new Map<string, number>();
  private readonly inFlight = new Map<string, number>();
  /** The token ids of each session's positions, truncated with its context. */
  private readonly tokens = new SessionTokens();
  private readonly budget: number;
  private readonly metrics?: WorkerMetrics;
  private evictions = 0;

  constructor(
    private readonly sessions: SegmentSessions,
    private readonly batcher: DecodeBatcher,
    options: ContextManagerOptions = {},
  ) {
    this.budget = options.memoryBudgetBytes ?? DEFAULT_CONTEXT_MANAGER_OPTIONS.memoryBudgetBytes;
    this.metrics = options.metrics;
  }

  /** Positions held for the session; 0 for one never seen or evicted. */
  contextLength(sessionId: string): number {
    return this.sessions.has(sessionId) ? this.sessions.length(sessionId) : 0;
  }

  /**
   * Applies a frame of positions [start, start + count) by the escalation protocol's
   * rules (applyFrame): a frame starting before the context's end replaces what follows
   * (the edge resent it); one starting after it is ContextLostError.
   */
  async append(sessionId: string, frame: FrameToApply): Promise<SegmentStep> {
    this.touch(sessionId);
    this.inFlight.set(sessionId, (this.inFlight.get(sessionId) ?? 0) + 1);
    const stepDone = this.metrics?.stepStarted();
    try {
      // A single position joins the decode batch; longer frames (context sync) run a
      // chunk a step beside it.
      return await applyFrameToSession(this.sessions, this.tokens, sessionId, frame, (h, n, headPositions) =>
        this.batcher.step(sessionId, h, n, headPositions),
      );
    } finally {
      stepDone?.();
      const left = (this.inFlight.get(sessionId) ?? 1) - 1;
      if (left === 0) this.inFlight.delete(sessionId);
      else this.inFlight.set(sessionId, left);
      await this.evictOverBudget(sessionId);
    }
  }

  async truncate(sessionId: string, length: number): Promise<void> {
    await this.sessions.truncate(sessionId, length);
    this.tokens.truncate(sessionId, length);
  }

  sessionIds(): string[] {
    return this.sessions.sessionIds;
  }

  tokenHistory(sessionId: string): readonly number[] {
    return this.tokens.history(sessionId);
  }

  release(sessionId: string, options: { freeNow?: boolean } = {}): void {
    this.sessions.release(sessionId, options);
    this.tokens.release(sessionId);
    this.lastUsed.delete(sessionId);
  }

  stats(): ContextManagerStats {
    // The slots sessions hold, a batch's shared slot once: the memory the budget is about.
    const kvBytes = this.sessions.totalKvBytes();
    return { sessions: this.sessions.sessionIds.length, kvBytes, evictions: this.evictions };
  }

  private touch(sessionId: string): void {
    this.lastUsed.delete(sessionId);
    this.lastUsed.set(sessionId, Date.now());
  }

  private async evictOverBudget(keep: string): Promise<void> {
    // Once per frame: under budget (the usual case) it costs one sum, no copy of the keys.
    let total = this.sessions.totalKvBytes();
    if (total <= this.budget) return;
    for (const id of [...this.lastUsed.keys()]) {
      if (total <= this.budget) break;
      // Checked after each wait too: a session may have sent a frame meanwhile.
      if (id === keep || this.inFlight.has(id) || !this.sessions.has(id)) continue;
      // Freed now: a pool gives memory back only when rows move out of it or it shrinks.
      this.release(id, { freeNow: true });
      this.evictions++;
      // Measured again rather than less the session's kvBytes: its row frees memory only
      // once the pools are compacted (in the sessions' queue of calls).
      await this.sessions.settled();
      total = this.sessions.totalKvBytes();
    }
  }
}
