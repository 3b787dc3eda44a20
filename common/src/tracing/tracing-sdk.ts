/**
 * Starts OpenTelemetry's Node SDK for a program: traces only, exported where the
 * standard OTEL_* variables say (OTEL_TRACES_EXPORTER, otlp by default, to
 * OTEL_EXPORTER_OTLP_ENDPOINT; OTEL_SERVICE_NAME over the program's own name).
 *
 * The spans are Tandem's own (tracing.ts), each given its parent explicitly, so the SDK
 * runs without automatic instrumentation and without an asynchronous context manager:
 * both would make the whole process pay for context that only those spans need —
 * AsyncLocalStorage on every promise, wrapped gRPC and HTTP calls on every message — and
 * the per-token path is where Tandem's spans are. A request's incoming trace context
 * (gRPC metadata, HTTP headers) is read by the request's own span instead.
 *
 * A module apart from the package's index, because loading it loads the SDK and its
 * exporters: start-tracing.ts imports it only when tracing is on.
 */
import { NodeSDK, type NodeSDKConfiguration } from "@opentelemetry/sdk-node";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import type { SpanProcessor } from "@opentelemetry/sdk-trace";
import * as OpenTelemetry from "@opentelemetry/api";
import { setTracingShutdown, useTracingApi } from "./tracing.ts";
import { SynchronousContextManager } from "./synchronous-context-manager.ts";

export interface TracingOptions {
  /** The resource's service.name, e.g. `tandem-edge`, unless OTEL_SERVICE_NAME names another. */
  serviceName: string;
  /** Where spans go. @default the exporters of OTEL_TRACES_EXPORTER, each batched */
  spanProcessors?: SpanProcessor[];
}

/** Starts the SDK; shutdownTracing() (runProgram calls it on SIGTERM) flushes and stops it. */
export function startTracing(options: TracingOptions): void {
  const configuration: Partial<NodeSDKConfiguration> = {
    instrumentations: [],
    contextManager: new SynchronousContextManager(),
    // Traces only: metrics are the programs' Prometheus endpoints, logs are pino's lines.
    metricReaders: [],
    logRecordProcessors: [],
  };
  if (!process.env.OTEL_SERVICE_NAME) configuration.serviceName = options.serviceName;
  if (options.spanProcessors) configuration.spanProcessors = options.spanProcessors;
  const sdk = new NodeSDK(configuration);
  sdk.start();
  // Tandem's own spans go through the API only from here on (tracing.ts).
  useTracingApi(OpenTelemetry, new W3CTraceContextPropagator());
  setTracingShutdown(() => sdk.shutdown());
}
