/**
 * The worker's spans. Each frame it serves continues the edge's trace: its span is a child
 * of the edge's escalation span, whose context the frame carries (one stream carries a
 * session's frames of many requests, so the stream's own context would not do). A decode
 * batch of several frames serves several sessions, hence several traces: its span starts
 * a trace of its own and links to the frame spans it served.
 */
import { SpanKind, extractTraceContext, inSpan, type Link, type Span } from "@tandem/common";
import type { CloudMessage__Output, EdgeMessage__Output } from "@tandem/proto";
import { traceContextError } from "@tandem/runtime";

/** Span names, as a trace backend shows them. */
export const WORKER_SPANS = {
  /** One frame served: decoded, checked, applied, answered. */
  frame: "tandem.worker.frame",
  /** One batched decode step over several sessions. */
  decodeBatch: "tandem.worker.decode_batch",
} as const;

/**
 * The span of the frame each session is being served for, while it records: how a decode
 * step queued deep inside the frame's handling finds the span to report its batch to,
 * without a context carried through every call in between. A session's frames are served
 * one after another, so one span per session is all there is.
 */
const servingSpans = new Map<string, Span>();

/**
 * Runs the handling of a message in the span of its frame, a child of the span the
 * frame's trace context names; any other message runs as it is. The frame's own numbers
 * (start, count, bytes) are on that parent, the edge's escalation span: these spans come
 * one a token, and repeating them would cost more than it tells.
 */
export function inFrameSpan(
  message: EdgeMessage__Output,
  sessionId: string | undefined,
  handle: () => Promise<CloudMessage__Output | undefined>,
): Promise<CloudMessage__Output | undefined> {
  const frame = message.frame;
  if (!frame) return handle();
  return inSpan(
    WORKER_SPANS.frame,
    { kind: SpanKind.SERVER },
    async (span) => {
      const recording = span.isRecording() && sessionId !== undefined;
      if (recording) servingSpans.set(sessionId, span);
      try {
        const reply = await handle();
        // ContextLost is an answer, not a failure: the edge replays from it.
        if (reply?.message && span.isRecording()) span.setAttribute("tandem.worker.reply", reply.message);
        return reply;
      } finally {
        if (recording && servingSpans.get(sessionId) === span) servingSpans.delete(sessionId);
      }
    },
    // Over-long fields are not read: the frame is refused for them once decoded.
    traceContextError(frame) ? undefined : extractTraceContext(frame),
  );
}

/** What a queued decode step of `sessionId` reports its batch to: the span of the frame it serves, if that records. */
export function frameSpan(sessionId: string): Span | undefined {
  return servingSpans.get(sessionId);
}

/**
 * Runs one batched step. Several frames (of several sessions, hence traces): a span of its
 * own, linked to their frame spans. One frame: no span of its own — the step is its frame
 * span's work, and a span per token more would cost more than it tells. Either way each
 * frame span records the size of the batch it ran in. No span at all when none records.
 */
export function inBatchSpan<T>(served: (Span | undefined)[], run: () => Promise<T>): Promise<T> {
  const recording = served.filter((span): span is Span => span !== undefined);
  for (const span of recording) span.setAttribute("tandem.batch.size", served.length);
  if (recording.length === 0 || served.length === 1) return run();
  const links: Link[] = recording.map((span) => ({ context: span.spanContext() }));
  return inSpan(
    WORKER_SPANS.decodeBatch,
    { root: true, links, attributes: { "tandem.batch.size": served.length } },
    () => run(),
  );
}
