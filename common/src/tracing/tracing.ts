/**
 * Spans in Tandem's code, written against @opentelemetry/api. The API itself is handed
 * over by the SDK's start (tracing-sdk.ts, which bin/load-program.mjs runs when
 * TANDEM_TRACING=1): until then no module of OpenTelemetry is loaded — every program
 * starts without them — and each helper is a plain call: spans do not record, nothing is
 * made active, and callers skip building attributes and trace context by asking
 * `span.isRecording()`.
 */
import type * as OpenTelemetry from "@opentelemetry/api";
import type { Context, Span, SpanOptions, SpanKind as SpanKindEnum } from "@opentelemetry/api";

export type { Attributes, Context, Link, Span, SpanContext, SpanOptions } from "@opentelemetry/api";

/** @opentelemetry/api's SpanKind, by value, without loading the API. */
export const SpanKind = {
  INTERNAL: 0,
  SERVER: 1,
  CLIENT: 2,
  PRODUCER: 3,
  CONSUMER: 4,
} as const satisfies Record<string, number> as unknown as typeof SpanKindEnum;

/** The API, once the SDK has started; undefined while tracing is off. */
let api: typeof OpenTelemetry | undefined;
let tracer: OpenTelemetry.Tracer | undefined;

/** Called by the SDK's start: from now on the helpers make spans through `otel`. */
export function useTracingApi(otel: typeof OpenTelemetry): void {
  api = otel;
  tracer = otel.trace.getTracer("tandem");
}

/** A span that records nothing: what every helper hands out while tracing is off. */
const NOT_RECORDING: Span = {
  spanContext: () => ({ traceId: "0".repeat(32), spanId: "0".repeat(16), traceFlags: 0 }),
  setAttribute: () => NOT_RECORDING,
  setAttributes: () => NOT_RECORDING,
  addEvent: () => NOT_RECORDING,
  addLink: () => NOT_RECORDING,
  addLinks: () => NOT_RECORDING,
  setStatus: () => NOT_RECORDING,
  updateName: () => NOT_RECORDING,
  end: () => {},
  isRecording: () => false,
  recordException: () => {},
};

/**
 * Runs `fn` in a new span, a child of `parent` (the active context by default) that is
 * the active span for everything `fn` does, and ends it: OK when `fn` resolves, ERROR
 * with the exception when it throws. A span that does not record is neither made active
 * nor given a status: with tracing off this is a call to `fn`.
 */
export async function inSpan<T>(
  name: string,
  options: SpanOptions,
  fn: (span: Span) => Promise<T>,
  parent?: Context,
): Promise<T> {
  if (!api || !tracer) return fn(NOT_RECORDING);
  const { context, trace, SpanStatusCode } = api;
  const base = parent ?? context.active();
  const span = tracer.startSpan(name, options, base);
  if (!span.isRecording()) return fn(span);
  try {
    const result = await context.with(trace.setSpan(base, span), fn, undefined, span);
    span.setStatus({ code: SpanStatusCode.OK });
    return result;
  } catch (error) {
    if (error instanceof Error) span.recordException(error);
    span.setStatus({
      code: SpanStatusCode.ERROR,
      message: error instanceof Error ? error.message : String(error),
    });
    throw error;
  } finally {
    span.end();
  }
}

/** W3C trace context as a message carries it (HiddenStateFrame's traceparent and tracestate). */
export interface TraceCarrier {
  traceparent: string;
  tracestate: string;
}

/**
 * The active span's trace context, for a message that crosses to another process.
 * Call it only when that span records: the carrier is built for every call.
 */
export function injectTraceContext(): TraceCarrier {
  if (!api) return { traceparent: "", tracestate: "" };
  const carrier: Record<string, string> = {};
  api.propagation.inject(api.context.active(), carrier);
  return { traceparent: carrier.traceparent ?? "", tracestate: carrier.tracestate ?? "" };
}

/**
 * The context a message's trace context names, as the parent of the span that serves it;
 * the empty context when the message carries none (the sender does not trace), and
 * undefined while tracing is off. Built on the root context, not the active one: a
 * message's parent is its sender's span, whatever span the receiving stream runs in.
 */
export function extractTraceContext(carrier: TraceCarrier): Context | undefined {
  if (!api) return undefined;
  if (!carrier.traceparent) return api.ROOT_CONTEXT;
  return api.propagation.extract(api.ROOT_CONTEXT, carrier);
}

/** The active span when it records; undefined with tracing off. */
export function recordingSpan(): Span | undefined {
  const span = api?.trace.getActiveSpan();
  return span?.isRecording() ? span : undefined;
}

let shutdown: (() => Promise<void>) | undefined;

/** Called by the SDK's start: how to flush and stop it when the program stops. */
export function setTracingShutdown(stop: () => Promise<void>): void {
  shutdown = stop;
}

/** Exports the spans still buffered and stops the SDK; nothing when tracing is off. */
export async function shutdownTracing(): Promise<void> {
  const stop = shutdown;
  shutdown = undefined;
  await stop?.();
}
