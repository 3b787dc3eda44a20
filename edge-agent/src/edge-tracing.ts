/**
 * The edge's spans. A request's span (one per Generate call or HTTP request) is the root
 * of its trace; the escalations its generation makes are its children, and the cloud
 * worker continues the trace under each escalation from the context the frame carries.
 */
import {
  SpanKind,
  inSpan,
  injectTraceContext,
  recordingSpan,
  type Attributes,
  type Span,
} from "@tandem/common";
import type { EdgeMessage__Output } from "@tandem/proto";
import type { CodecName, UpperFrame } from "@tandem/runtime";

/** Span names, as a trace backend shows them. */
export const EDGE_SPANS = {
  /** One generation request (gRPC Generate or an HTTP completion): the root of its trace. */
  request: "tandem.generate",
  /** One escalation: a frame sent to the cloud, and its answer when it wants one. */
  escalation: "tandem.edge.escalation",
} as const;

/**
 * Runs a request's work in its span: everything `fn` awaits (the generation, its
 * escalations) happens with the span active, so their spans are its children. The span
 * ends when `fn` settles, with status ERROR and the exception when it throws. With tracing
 * off this calls `fn`; `attributes` are then not read.
 */
export function runInRequestSpan<T>(
  name: string,
  attributes: Attributes,
  fn: (span: Span) => Promise<T>,
): Promise<T> {
  return inSpan(name, {}, (span) => {
    span.setAttributes(attributes);
    return fn(span);
  });
}

/**
 * Marks a frame about to be sent with the active escalation span's trace context, and
 * the span with what the frame carries. Nothing when the span does not record: no
 * carrier is built and the frame's traceparent stays empty.
 */
export function traceFrame(message: EdgeMessage__Output, codec: CodecName, address: string): void {
  const span = recordingSpan();
  if (!span || !message.frame) return;
  span.setAttributes({
    "tandem.escalation.codec": codec,
    "tandem.escalation.bytes": message.frame.payload.length,
    "server.address": address,
  });
  Object.assign(message.frame, injectTraceContext());
}

/** Runs one escalation (`CloudSession.extend`, retries and redirects included) in its span. */
export function inEscalationSpan<T>(sessionId: string, frame: UpperFrame, fn: () => Promise<T>): Promise<T> {
  return inSpan(EDGE_SPANS.escalation, { kind: SpanKind.CLIENT }, (span) => {
    if (span.isRecording())
      span.setAttributes({
        "tandem.session_id": sessionId,
        "tandem.escalation.start": frame.start,
        "tandem.escalation.count": frame.count,
        "tandem.escalation.want_token": frame.wantToken,
      });
    return fn();
  });
}
