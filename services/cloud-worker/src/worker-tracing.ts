/**
 * The worker's spans. Each frame it serves continues the edge's trace: its span is a child
 * of the edge's escalation span, whose context the frame carries (one stream carries a
 * session's frames of many requests, so the stream's own context would not do). A decode
 * batch serves frames of several sessions, hence of several traces: its span starts a
 * trace of its own and links to the frame spans it served.
 */
import {
  SpanKind,
  extractTraceContext,
  inSpan,
  recordingSpanContext,
  type Link,
  type SpanContext,
} from "@tandem/common";
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

/** What a queued decode step links its batch to: the frame span it serves, if that records. */
export function frameLink(): SpanContext | undefined {
  return recordingSpanContext();
}

/**
 * Runs one batched step in its span, linked to the frame spans it serves. No span at all
 * when none of them records (tracing off, or none sampled).
 */
export function inBatchSpan<T>(served: (SpanContext | undefined)[], run: () => Promise<T>): Promise<T> {
  const links: Link[] = [];
  for (const context of served) if (context) links.push({ context });
  if (links.length === 0) return run();
  return inSpan(
    WORKER_SPANS.decodeBatch,
    { root: true, links, attributes: { "tandem.batch.size": served.length } },
    () => run(),
  );
}
