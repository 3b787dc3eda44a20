/**
 * Batches single-position decode steps of concurrent sessions into one runtime call:
 * requests that arrive while a batch runs (or in the same event-loop turn) form the next batch.
 * One batched step reads the weights once for every session in it, which is what makes
 * a memory-bound decode cheaper per token under load.
 */
import type { SegmentSessions, SegmentStep } from "@tandem/runtime";
import type { WorkerMetrics } from "./worker-metrics.ts";
import { frameSpan, inBatchSpan } from "./worker-tracing.ts";
import type { Span } from "@tandem/common";

interface Pending {
  id: string;
  hidden: Float32Array;
  resolve: (step: SegmentStep) => void;
  reject: (error: unknown) => void;
  /** The span of the frame this step serves, when it records: its batch's span links to it. */
  span?: Span;
}

export interface DecodeBatcherOptions {
  /** Most sessions in one runtime call. @default 16 */
  maxBatch?: number;
  /** Batch nothing: run each step alone (for comparison). @default true */
  enabled?: boolean;
  /** Where each batch's size is reported. @default none */
  metrics?: WorkerMetrics;
}

export const DEFAULT_DECODE_BATCHER_OPTIONS = { maxBatch: 16, enabled: true } as const;

export class DecodeBatcher {
  private queue: Pending[] = [];
  private running = false;
  private readonly maxBatch: number;
  private readonly enabled: boolean;
  private readonly metrics?: WorkerMetrics;
  /** Histogram of batch sizes, for metrics and benchmarks. */
  readonly batchSizes = new Map<number, number>();

  constructor(
    private readonly sessions: SegmentSessions,
    options: DecodeBatcherOptions = {},
  ) {
    this.maxBatch = options.maxBatch ?? DEFAULT_DECODE_BATCHER_OPTIONS.maxBatch;
    this.enabled = options.enabled ?? DEFAULT_DECODE_BATCHER_OPTIONS.enabled;
    this.metrics = options.metrics;
  }

  step(id: string, hidden: Float32Array): Promise<SegmentStep> {
    if (!this.enabled) return this.sessions.forward(id, { hidden, count: 1 });
    return new Promise((resolve, reject) => {
      this.queue.push({ id, hidden, resolve, reject, span: frameSpan(id) });
      // Continuous batching: the first request runs at once (after this microtask, so
      // requests that arrived in the same turn join it); later ones gather while it runs.
      if (!this.running) queueMicrotask(() => void this.drain());
    });
  }

  private async drain(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      while (this.queue.length > 0) {
        // One entry per session per batch; a session's second request waits for the next.
        const batch: Pending[] = [];
        const rest: Pending[] = [];
        const seen = new Set<string>();
        for (const item of this.queue) {
          if (batch.length < this.maxBatch && !seen.has(item.id)) {
            batch.push(item);
            seen.add(item.id);
          } else {
            rest.push(item);
          }
        }
        this.queue = rest;
        this.batchSizes.set(batch.length, (this.batchSizes.get(batch.length) ?? 0) + 1);
        this.metrics?.decodeBatchRan(batch.length);
        await inBatchSpan(
          batch.map((b) => b.span),
          () => this.run(batch),
        );
      }
    } finally {
      this.running = false;
    }
  }

  /** Runs one batch; each request settles with its own step or error, so this never throws. */
  private async run(batch: Pending[]): Promise<void> {
    if (batch.length === 1) {
      // A batch of one gains nothing from padding and copying KV into a batch tensor.
      const [only] = batch;
      await this.sessions.forward(only.id, { hidden: only.hidden, count: 1 }).then(only.resolve, only.reject);
      return;
    }
    try {
      const steps = await this.sessions.forwardBatch(
        batch.map((b) => ({ id: b.id, input: { hidden: b.hidden, count: 1 } })),
      );
      batch.forEach((b, i) => b.resolve(steps[i]));
    } catch {
      // A batch fails as a whole (e.g. one session released mid-flight): run each
      // alone so one bad session fails only its own request, with its own error.
      for (const b of batch)
        this.sessions.forward(b.id, { hidden: b.hidden, count: 1 }).then(b.resolve, b.reject);
    }
  }
}
