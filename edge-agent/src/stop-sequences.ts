/**
 * Streams text while watching for stop sequences: text that could still be the start of
 * a stop sequence is held back until it is known not to be one, so a stop sequence
 * split across tokens is caught and never emitted.
 */
export class StopSequenceFilter {
  private held = "";
  stopped = false;

  constructor(private readonly stops: string[]) {}

  /** Returns the text safe to emit now. */
  push(piece: string): string {
    if (this.stopped) return "";
    this.held += piece;
    for (const stop of this.stops) {
      const at = this.held.indexOf(stop);
      if (at >= 0) {
        this.stopped = true;
        const out = this.held.slice(0, at);
        this.held = "";
        return out;
      }
    }
    // Keep the longest suffix that is a prefix of some stop sequence.
    let keep = 0;
    for (const stop of this.stops) {
      for (let n = Math.min(stop.length - 1, this.held.length); n > keep; n--) {
        if (this.held.endsWith(stop.slice(0, n))) {
          keep = n;
          break;
        }
      }
    }
    const out = this.held.slice(0, this.held.length - keep);
    this.held = this.held.slice(this.held.length - keep);
    return out;
  }

  /** Whatever is held back at the end of generation. */
  flush(): string {
    const out = this.stopped ? "" : this.held;
    this.held = "";
    return out;
  }
}
