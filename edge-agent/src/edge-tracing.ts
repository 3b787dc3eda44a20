/**
 * The edge's spans. A request's span (one per Generate call or HTTP request) is the root
 * of its trace; the escalations its generation makes are its children, and the cloud
 * worker continues the trace under each escalation from the context the frame carries.
 */
import {
  SpanKind,
  extractRequestContext,
  inSpan,
  injectTraceContext,
  type Attributes,
  type Context,
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

/** Request headers as either API holds them: gRPC metadata values or HTTP header values. */
export type RequestHeaders = Record<string, string | string[] | Buffer | (string | Buffer)[] | undefined>;

const HEADER_GETTER = {
  keys: (headers: RequestHeaders) => Object.keys(headers),
  get: (headers: RequestHeaders, key: string) => {
    const value = headers[key];
    if (value === undefined) return undefined;
    const values = Array.isArray(value) ? value : [value];
    return values.map((v) => v.toString());
  },
};

/**
 * Runs a request's work in its span, a child of the trace context the request's headers
 * carry (a client that traces continues its trace into Tandem's), else the root of a new
 * trace. `fn` gets the span: the escalations of its generation are its children. The span
 * ends when `fn` settles, with status ERROR and the exception when it throws. With tracing
 * off this calls `fn`; `attributes` and `headers` are then not read.
 */
export function runInRequestSpan<T>(
  name: string,
  attributes: Attributes,
  headers: RequestHeaders,
  fn: (span: Span) => Promise<T>,
): Promise<T> {
  return inSpan(
    name,
    {},
    (span) => {
      if (span.isRecording()) span.setAttributes(attributes);
      return fn(span);
    },
    extractRequestContext(headers, HEADER_GETTER),
  );
}

/**
 * Marks a frame about to be sent with its escalation span's trace context, and the span
 * with what the frame carries. Nothing when the span does not record: no carrier is built
 * and the frame's traceparent stays empty.
 */
export function traceFrame(
  message: EdgeMessage__Output,
  span: Span,
  codec: CodecName,
  address: string,
): void {
  if (!span.isRecording() || !message.frame) return;
  span.setAttributes({
    "tandem.escalation.codec": codec,
    "tandem.escalation.bytes": message.frame.payload.length,
    "server.address": address,
  });
  Object.assign(message.frame, injectTraceContext(span));
}

/**
 * Runs one escalation (`CloudSession.extend`, retries and redirects included) in its span,
 * a child of the request span `parent`. The session id is the request span's, not repeated
 * here: these spans come one a token.
 */
export function inEscalationSpan<T>(
  parent: Context | undefined,
  frame: UpperFrame,
  fn: (span: Span) => Promise<T>,
): Promise<T> {
  return inSpan(
    EDGE_SPANS.escalation,
    { kind: SpanKind.CLIENT },
    (span) => {
      if (span.isRecording())
        span.setAttributes({
          "tandem.escalation.start": frame.start,
          "tandem.escalation.count": frame.count,
          "tandem.escalation.want_token": frame.wantToken,
        });
      return fn(span);
    },
    parent,
  );
}
