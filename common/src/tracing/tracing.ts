/**
 * Spans in Tandem's code, written against @opentelemetry/api. The API itself is handed
 * over by the SDK's start (tracing-sdk.ts, which start-tracing.ts loads when
 * TANDEM_TRACING=1): until then no module of OpenTelemetry is loaded — every program
 * starts without them — and each helper is a plain call: spans do not record, and callers
 * skip building attributes and trace context by asking `span.isRecording()`.
 *
 * Parents are passed explicitly, never found in an "active" context: a span's parent is
 * the span a caller hands over (a request's span to its escalations) or the W3C context a
 * message or a request carries. Tracking an active span across awaits takes
 * AsyncLocalStorage, which taxes every promise of the process; Tandem's spans sit on the
 * per-token path, where that tax was most of tracing's cost.
 */
import type * as OpenTelemetry from "@opentelemetry/api";
import type {
  Context,
  Span,
  SpanOptions,
  SpanKind as SpanKindEnum,
  TextMapGetter,
  TextMapPropagator,
} from "@opentelemetry/api";

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
/** W3C trace context, the one format a frame's fields hold, whatever OTEL_PROPAGATORS says. */
let w3c: TextMapPropagator | undefined;

/**
 * Called by the SDK's start: from now on the helpers make spans through `otel`, and carry
 * a frame's trace context with `w3cPropagator`.
 */
export function useTracingApi(otel: typeof OpenTelemetry, w3cPropagator: TextMapPropagator): void {
  api = otel;
  tracer = otel.trace.getTracer("tandem");
  w3c = w3cPropagator;
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
 * Runs `fn` in a new span, a child of `parent` (a new trace without one), and ends it: OK
 * when `fn` resolves, ERROR with the exception when it throws. `fn` gets the span, to hand
 * to the work it starts as their parent. A span that does not record is given no status:
 * with tracing off this is a call to `fn`.
 */
export async function inSpan<T>(
  name: string,
  options: SpanOptions,
  fn: (span: Span) => Promise<T>,
  parent?: Context,
): Promise<T> {
  if (!api || !tracer) return fn(NOT_RECORDING);
  const span = tracer.startSpan(name, options, parent ?? api.ROOT_CONTEXT);
  if (!span.isRecording()) return fn(span);
  try {
    const result = await fn(span);
    span.setStatus({ code: api.SpanStatusCode.OK });
    return result;
  } catch (error) {
    if (error instanceof Error) span.recordException(error);
    span.setStatus({
      code: api.SpanStatusCode.ERROR,
      message: error instanceof Error ? error.message : String(error),
    });
    throw error;
  } finally {
    span.end();
  }
}

/** The context whose span is `span`: the parent argument of the spans `span`'s work starts. */
export function contextOf(span: Span): Context | undefined {
  if (!api || !span.isRecording()) return undefined;
  return api.trace.setSpan(api.ROOT_CONTEXT, span);
}

/** W3C trace context as a message carries it (HiddenStateFrame's traceparent and tracestate). */
export interface TraceCarrier {
  traceparent: string;
  tracestate: string;
}

/**
 * `span`'s trace context, for a message that crosses to another process. Call it only when
 * the span records: the carrier is built for every call.
 */
export function injectTraceContext(span: Span): TraceCarrier {
  if (!api || !w3c) return { traceparent: "", tracestate: "" };
  const carrier: Record<string, string> = {};
  w3c.inject(api.trace.setSpan(api.ROOT_CONTEXT, span), carrier, api.defaultTextMapSetter);
  return { traceparent: carrier.traceparent ?? "", tracestate: carrier.tracestate ?? "" };
}

/**
 * The context a message's trace context names, as the parent of the span that serves it;
 * the empty context when the message carries none (the sender does not trace), and
 * undefined while tracing is off.
 */
export function extractTraceContext(carrier: TraceCarrier): Context | undefined {
  if (!api || !w3c) return undefined;
  if (!carrier.traceparent) return api.ROOT_CONTEXT;
  return w3c.extract(api.ROOT_CONTEXT, carrier, api.defaultTextMapGetter);
}

/**
 * The context a request's headers name (gRPC metadata or HTTP headers, read through
 * `getter`), in the formats the SDK's propagators take (OTEL_PROPAGATORS; W3C trace
 * context and baggage by default): the parent of the request's span, so that a client's
 * trace continues into Tandem's. Undefined while tracing is off.
 */
export function extractRequestContext<Carrier>(
  carrier: Carrier,
  getter: TextMapGetter<Carrier>,
): Context | undefined {
  if (!api) return undefined;
  return api.propagation.extract(api.ROOT_CONTEXT, carrier, getter);
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
