/**
 * The worker's step scheduler (continuous batching). Requests that arrive while a step
 * runs (or in the same event-loop turn) form the next step, which is:
 *   - a decode batch: one position of each waiting session of one KV pool, in one runtime
 *     call on the pool's rows where they are (sessions join and leave it copying nothing);
 *   - then a chunk of the oldest catch-up frame (a frame of many positions: an edge's
 *     prompt or a context replay), as many positions as the step's token budget leaves, so
 *     a long frame delays the decoders by a chunk a step rather than by all of it.
 * A segment run takes one sequence length for every row of a call, so
 * the chunk is a second call of the same step, not rows of the decode batch's.
 * One batched step reads the weights once for every session in it, which is what makes a
 * memory-bound decode cheaper per token under load.
 */
import type { SegmentSessions, SegmentStep } from "@tandem/runtime";
import type { WorkerMetrics } from "./worker-metrics.ts";
import { frameSpan, inBatchSpan } from "./worker-tracing.ts";
import type { Span } from "@tandem/common";

interface Pending {
  id: string;
  /** The frame's hidden states, [count, hidden]. */
  hidden: Float32Array;
  count: number;
  /** The head evaluates the frame's last this many positions (a segment of positions "tail"). */
  headPositions?: number;
  /** Positions of the frame already run (a catch-up frame runs a chunk a step). */
  done: number;
  /** The steps of the chunks run so far. */
  chunks: SegmentStep[];
  /** Those of them whose exits count: each chunk for positions "all", the chunks of the frame's head positions for "tail", the last for "last". */
  headChunks: SegmentStep[];
  resolve: (step: SegmentStep) => void;
  reject: (error: unknown) => void;
  /** The span of the frame this step serves, when it records: its batch's span links to it. */
  span?: Span;
}

export interface DecodeBatcherOptions {
  /** Most sessions in one runtime call: the rows of each of the worker's KV pools. @default 16 */
  maxBatch?: number;
  /** Batch nothing: run each frame alone and whole (for comparison). @default true */
  enabled?: boolean;
  /**
   * Positions one step runs: its decode batch plus a chunk of a catch-up frame. A chunk
   * has at least MIN_PREFILL_CHUNK positions, whatever the decode batch takes. @default 256
   */
  stepTokenBudget?: number;
  /** Where each batch's size is reported. @default none */
  metrics?: WorkerMetrics;
}

export const DEFAULT_DECODE_BATCHER_OPTIONS = { maxBatch: 16, enabled: true, stepTokenBudget: 256 } as const;

/** Fewest positions of a catch-up frame a step runs, so a full decode batch cannot starve it. */
export const MIN_PREFILL_CHUNK = 16;

export class DecodeBatcher {
  private queue: Pending[] = [];
  private running = false;
  private readonly maxBatch: number;
  private readonly enabled: boolean;
  private readonly stepTokenBudget: number;
  private readonly metrics?: WorkerMetrics;
  /** Histogram of decode batch sizes, for metrics and benchmarks. */
  readonly batchSizes = new Map<number, number>();

  constructor(
    private readonly sessions: SegmentSessions,
    options: DecodeBatcherOptions = {},
  ) {
    this.maxBatch = options.maxBatch ?? DEFAULT_DECODE_BATCHER_OPTIONS.maxBatch;
    this.enabled = options.enabled ?? DEFAULT_DECODE_BATCHER_OPTIONS.enabled;
    this.stepTokenBudget = options.stepTokenBudget ?? DEFAULT_DECODE_BATCHER_OPTIONS.stepTokenBudget;
    this.metrics = options.metrics;
  }

  /**
   * Runs a frame of `count` positions ([count, hidden] states) for the session; with a
   * segment of head positions "tail", the head evaluates its last `headPositions`.
   */
  step(id: string, hidden: Float32Array, count = 1, headPositions?: number): Promise<SegmentStep> {
    if (!this.enabled) return this.sessions.forward(id, { hidden, count, headPositions });
    return new Promise((resolve, reject) => {
      this.queue.push({
        id,
        hidden,
        count,
        headPositions,
        done: 0,
        chunks: [],
        headChunks: [],
        resolve,
        reject,
        span: frameSpan(id),
      });
      // The first request runs at once (after this microtask, so requests that arrived
      // in the same turn join it); later ones gather while it runs.
      if (!this.running) queueMicrotask(() => void this.drain());
    });
  }

  private async drain(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      while (this.queue.length > 0) {
        const { decodes, prefill } = this.nextStep();
        this.queue = this.queue.filter((p) => !decodes.includes(p));
        if (decodes.length > 0) {
          this.batchSizes.set(decodes.length, (this.batchSizes.get(decodes.length) ?? 0) + 1);
          this.metrics?.decodeBatchRan(decodes.length);
          await inBatchSpan(
            decodes.map((p) => p.span),
            () => this.runDecodes(decodes),
          );
        }
        if (prefill) await this.runChunk(prefill, decodes.length);
      }
    } finally {
      this.running = false;
    }
  }

  /**
   * What the next step runs: the single-position frames of the pool of the oldest one
   * (one per session, up to maxBatch), and the oldest catch-up frame. A frame waits while
   * an earlier one of its session is queued, so each session's frames run in order.
   */
  private nextStep(): { decodes: Pending[]; prefill?: Pending } {
    const decodes: Pending[] = [];
    let prefill: Pending | undefined;
    let group: object | undefined;
    const seen = new Set<string>();
    for (const p of this.queue) {
      const first = !seen.has(p.id);
      seen.add(p.id);
      if (!first) continue;
      if (p.count > 1) {
        prefill ??= p;
        continue;
      }
      // A session that no longer exists fails in runDecodes, with its own error.
      const pGroup = this.sessions.has(p.id) ? this.sessions.batchGroup(p.id) : undefined;
      // A session with no cache yet joins any batch: it takes a free row where it can.
      if (decodes.length >= this.maxBatch || (pGroup && group && pGroup !== group)) continue;
      group ??= pGroup;
      decodes.push(p);
    }
    return { decodes, prefill };
  }

  /** Runs one decode batch; each request settles with its own step or error, so this never throws. */
  private async runDecodes(batch: Pending[]): Promise<void> {
    if (batch.length === 1) {
      const [only] = batch;
      await this.sessions.forward(only.id, { hidden: only.hidden, count: 1 }).then(only.resolve, only.reject);
      return;
    }
    try {
      const steps = await this.sessions.forwardBatch(
        batch.map((p) => ({ id: p.id, input: { hidden: p.hidden, count: 1 } })),
      );
      batch.forEach((p, i) => p.resolve(steps[i]));
    } catch {
      // A batch fails as a whole (e.g. one session released mid-flight): run each
      // alone so one bad session fails only its own request, with its own error.
      await Promise.all(
        batch.map((p) =>
          this.sessions.forward(p.id, { hidden: p.hidden, count: 1 }).then(p.resolve, p.reject),
        ),
      );
    }
  }

  /**
   * Runs the next chunk of a catch-up frame: what the budget leaves after `decoded`
   * positions, at least MIN_PREFILL_CHUNK. The frame settles after its last chunk; a
   * chunk that fails undoes the frame's earlier chunks, so the frame is all or nothing.
   */
  private async runChunk(frame: Pending, decoded: number): Promise<void> {
    const hiddenSize = frame.hidden.length / frame.count;
    const size = Math.min(
      frame.count - frame.done,
      Math.max(MIN_PREFILL_CHUNK, this.stepTokenBudget - decoded),
    );
    // The frame's head positions are its last ones: the part of them in this chunk is the chunk's tail.
    const evaluate = this.sessions.model.spec.positions;
    const headFrom = frame.count - (frame.headPositions ?? 1);
    const inChunk = frame.done + size - Math.max(frame.done, headFrom);
    try {
      const step = await inBatchSpan([frame.span], () =>
        this.sessions.forward(frame.id, {
          hidden: frame.hidden.subarray(frame.done * hiddenSize, (frame.done + size) * hiddenSize),
          count: size,
          headPositions: evaluate === "tail" ? Math.max(1, inChunk) : undefined,
        }),
      );
      frame.chunks.push(step);
      frame.done += size;
      const last = frame.done === frame.count;
      if (evaluate === "all" || (evaluate === "tail" ? inChunk > 0 : last)) frame.headChunks.push(step);
      if (!last) return;
      this.queue = this.queue.filter((p) => p !== frame);
      frame.resolve(concatSteps(frame.chunks, frame.headChunks));
    } catch (error) {
      this.queue = this.queue.filter((p) => p !== frame);
      if (frame.chunks.length > 0 && this.sessions.has(frame.id))
        await this.sessions.truncate(frame.id, frame.chunks[0].start).catch(() => undefined);
      frame.reject(error);
    }
  }
}

/**
 * The step of a whole frame from the steps of its chunks, in order: states concatenated;
 * exits those of `headChunks` (the chunks whose evaluated positions belong to the frame's
 * head positions), concatenated.
 */
export function concatSteps(chunks: SegmentStep[], headChunks: SegmentStep[]): SegmentStep {
  if (chunks.length === 1) return chunks[0];
  const last = chunks[chunks.length - 1];
  const concat = (parts: (Float32Array | undefined)[]): Float32Array | undefined => {
    if (parts.some((p) => p === undefined)) return undefined;
    const out = new Float32Array(parts.reduce((n, p) => n + p!.length, 0));
    let offset = 0;
    for (const part of parts) {
      out.set(part!, offset);
      offset += part!.length;
    }
    return out;
  };
  return {
    start: chunks[0].start,
    count: chunks.reduce((n, c) => n + c.count, 0),
    hidden: concat(chunks.map((c) => c.hidden)),
    taps: new Map([...last.taps.keys()].map((k) => [k, concat(chunks.map((c) => c.taps.get(k)))!])),
    exits:
      headChunks.length === 1
        ? headChunks[0].exits
        : last.exits.map((exit, e) => ({
            afterLayer: exit.afterLayer,
            token: headChunks.flatMap((c) => c.exits[e].token),
            prob: headChunks.flatMap((c) => c.exits[e].prob),
            margin: headChunks.flatMap((c) => c.exits[e].margin),
            entropy: headChunks.flatMap((c) => c.exits[e].entropy),
            logits: concat(headChunks.map((c) => c.exits[e].logits)),
          })),
  };
}
