/**
 * The token ids a session's context on the upper side stands for, kept in step with the
 * context: a frame's ids replace the positions from its start on, as its hidden states
 * do. Penalties are computed from them; a context whose ids are not all known (a frame
 * came without them) gives no history.
 */
export class SessionTokens {
  private readonly ids = new Map<string, number[]>();

  /** Records the ids of a frame of positions [start, start + count) that was applied; `ids` empty: not sent. */
  record(sessionId: string, start: number, count: number, ids: readonly number[]): void {
    const known = this.ids.get(sessionId) ?? [];
    // Positions the ids do not reach stay unknown, and so does everything after them.
    const complete = known.length >= start && ids.length === count;
    known.length = Math.min(known.length, start);
    if (complete) known.push(...ids);
    this.ids.set(sessionId, known);
  }

  /** Keeps the ids of positions [0, length) only, as the context is truncated. */
  truncate(sessionId: string, length: number): void {
    const known = this.ids.get(sessionId);
    if (known && known.length > length) known.length = length;
  }

  /** The ids of the session's positions [0, n) as far as they are known without a gap. */
  history(sessionId: string): readonly number[] {
    return this.ids.get(sessionId) ?? [];
  }

  release(sessionId: string): void {
    this.ids.delete(sessionId);
  }
}
