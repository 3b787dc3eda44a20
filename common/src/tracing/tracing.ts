/**
 * Spans in Tandem's code, written against @opentelemetry/api alone. Until a program
 * starts the SDK (tracing-sdk.ts, which bin/load-program.mjs runs when TANDEM_TRACING=1)
 * the api's tracer is its no-op one: spans do not record, nothing is made active, and
 * callers skip building attributes and trace context by asking `span.isRecording()`.
 */
import {
  ROOT_CONTEXT,
  SpanStatusCode,
  context,
  propagation,
  trace,
  type Context,
  type Span,
  type SpanContext,
  type SpanOptions,
} from "@opentelemetry/api";

export type { Attributes, Link, Span, SpanContext, SpanOptions } from "@opentelemetry/api";
export { SpanKind } from "@opentelemetry/api";

/** The tracer of Tandem's own spans; resolves to the SDK's once one is registered. */
export const tandemTracer = trace.getTracer("tandem");

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
  parent: Context = context.active(),
): Promise<T> {
  const span = tandemTracer.startSpan(name, options, parent);
  if (!span.isRecording()) return fn(span);
  try {
    const result = await context.with(trace.setSpan(parent, span), fn, undefined, span);
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
  const carrier: Record<string, string> = {};
  propagation.inject(context.active(), carrier);
  return { traceparent: carrier.traceparent ?? "", tracestate: carrier.tracestate ?? "" };
}

/**
 * The context a message's trace context names, as the parent of the span that serves it;
 * the empty context when the message carries none (the sender does not trace). Built on
 * the root context, not the active one: a message's parent is its sender's span, whatever
 * span the receiving stream runs in.
 */
export function extractTraceContext(carrier: TraceCarrier): Context {
  if (!carrier.traceparent) return ROOT_CONTEXT;
  return propagation.extract(ROOT_CONTEXT, carrier);
}

/** The active span when it records; undefined with tracing off. */
export function recordingSpan(): Span | undefined {
  const span = trace.getActiveSpan();
  return span?.isRecording() ? span : undefined;
}

/** The active span's context when it records: what a span serving several requests links to. */
export function recordingSpanContext(): SpanContext | undefined {
  return recordingSpan()?.spanContext();
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
