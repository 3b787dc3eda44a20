/**
 * Progress of a long operation (calibration, a batch job) as data, not text: what it is
 * doing, how far through that phase it is, and an optional note on a finished step. The
 * CLI renders it as a line; the batch worker stores it as the job's progress.
 */
export interface Progress {
  /** The current phase, e.g. "full model" or "prompts". */
  phase: string;
  /** Units of the phase done so far, out of `total`. */
  done: number;
  total: number;
  /** A finding worth showing a person, e.g. which head an exit chose. */
  note?: string;
}

export type ProgressListener = (progress: Progress) => void;

/** `calibrate: full model 50/120 — note`. */
export function formatProgress(operation: string, progress: Progress): string {
  return `${operation}: ${progress.phase} ${progress.done}/${progress.total}${progress.note ? ` — ${progress.note}` : ""}`;
}
