/**
 * The cloud context manager (CE-CoLLM): each session's KV cache for the worker's layers
 * [split, L), so an edge never resends context. Sessions are kept under a memory budget;
 * when it is exceeded the least recently used idle sessions are evicted, and an evicted
 * session that comes back is told to replay its context (ContextLostError).
 */
import type { SegmentSessions, SegmentStep } from "@tandem/runtime";
import { ContextLostError } from "@tandem/runtime";
import type { DecodeBatcher } from "./decode-batcher.ts";

export interface ContextManagerOptions {
  /** KV bytes all sessions may hold together. @default 512 MiB */
  memoryBudgetBytes?: number;
}

export interface ContextManagerStats {
  sessions: number;
  kvBytes: number;
  evictions: number;
}

export class ContextManager {
  /** Sessions in least-recently-used order (a Map iterates in insertion order). */
  private readonly lastUsed = new Map<string, number>();
  private readonly inFlight = new Map<string, number>();
  private readonly budget: number;
  private evictions = 0;

  constructor(
    private readonly sessions: SegmentSessions,
    private readonly batcher: DecodeBatcher,
    options: ContextManagerOptions = {},
  ) {
    this.budget = options.memoryBudgetBytes ?? 512 * 2 ** 20;
  }

  /** Positions held for the session; 0 for one never seen or evicted. */
  contextLength(sessionId: string): number {
    return this.sessions.has(sessionId) ? this.sessions.length(sessionId) : 0;
  }

  /**
   * Appends positions [start, start + count). A frame starting before the context's end
   * replaces what follows (the edge resent it); one starting after it cannot be applied.
   */
  async append(sessionId: string, start: number, hidden: Float32Array, count: number): Promise<SegmentStep> {
    if (!this.sessions.has(sessionId)) this.sessions.open(sessionId);
    this.touch(sessionId);
    this.inFlight.set(sessionId, (this.inFlight.get(sessionId) ?? 0) + 1);
    try {
      const length = this.sessions.length(sessionId);
      if (start > length)
        throw new ContextLostError(
          length,
          `worker holds ${length} positions of session ${sessionId}, frame starts at ${start}`,
        );
      if (start < length) await this.sessions.truncate(sessionId, start);
      const step =
        count === 1
          ? await this.batcher.step(sessionId, hidden)
          : await this.sessions.forward(sessionId, { hidden, count });
      return step;
    } finally {
      const left = (this.inFlight.get(sessionId) ?? 1) - 1;
      if (left === 0) this.inFlight.delete(sessionId);
      else this.inFlight.set(sessionId, left);
      this.evictOverBudget(sessionId);
    }
  }

  sessionIds(): string[] {
    return this.sessions.sessionIds;
  }

  release(sessionId: string): void {
    this.sessions.release(sessionId);
    this.lastUsed.delete(sessionId);
  }

  stats(): ContextManagerStats {
    let kvBytes = 0;
    for (const id of this.sessions.sessionIds) kvBytes += this.sessions.kvBytes(id);
    return { sessions: this.sessions.sessionIds.length, kvBytes, evictions: this.evictions };
  }

  private touch(sessionId: string): void {
    this.lastUsed.delete(sessionId);
    this.lastUsed.set(sessionId, Date.now());
  }

  private evictOverBudget(keep: string): void {
    let total = this.stats().kvBytes;
    for (const id of [...this.lastUsed.keys()]) {
      if (total <= this.budget) break;
      if (id === keep || this.inFlight.has(id)) continue;
      total -= this.sessions.kvBytes(id);
      this.release(id);
      this.evictions++;
    }
  }
}
