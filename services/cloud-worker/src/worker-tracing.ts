/**
 * The worker's spans. Each frame it serves continues the edge's trace: its span is a child
 * of the edge's escalation span, whose context the frame carries (one stream carries a
 * session's frames of many requests, so the stream's own context would not do). A decode
 * batch of several frames serves several sessions, hence several traces: its span starts
 * a trace of its own and links to the frame spans it served.
 */
import { SpanKind, extractTraceContext, inSpan, recordingSpan, type Link, type Span } from "@tandem/common";
import type { CloudMessage__Output, EdgeMessage__Output } from "@tandem/proto";

/** Span names, as a trace backend shows them. */
export const WORKER_SPANS = {
  /** One frame served: decoded, checked, applied, answered. */
  frame: "tandem.worker.frame",
  /** One batched decode step over several sessions. */
  decodeBatch: "tandem.worker.decode_batch",
} as const;

/** Runs the handling of a message in the span of its frame; any other message runs as it is. */
export function inFrameSpan(
  message: EdgeMessage__Output,
  sessionId: string | undefined,
  handle: () => Promise<CloudMessage__Output | undefined>,
): Promise<CloudMessage__Output | undefined> {
  const frame = message.frame;
  if (!frame) return handle();
  const parent = extractTraceContext(frame);
  return inSpan(
    WORKER_SPANS.frame,
    { kind: SpanKind.SERVER },
    async (span) => {
      if (span.isRecording())
        span.setAttributes({
          "tandem.session_id": sessionId ?? "",
          "tandem.escalation.start": frame.start,
          "tandem.escalation.count": frame.count,
          "tandem.escalation.bytes": frame.payload.length,
          "tandem.escalation.want_token": frame.wantToken,
        });
      const reply = await handle();
      // ContextLost is an answer, not a failure: the edge replays from it.
      if (reply?.message && span.isRecording()) span.setAttribute("tandem.worker.reply", reply.message);
      return reply;
    },
    parent,
  );
}

/** What a queued decode step reports its batch to: the span of the frame it serves, if that records. */
export function frameSpan(): Span | undefined {
  return recordingSpan();
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
