/**
 * Starts OpenTelemetry's Node SDK for a program: traces only, exported where the
 * standard OTEL_* variables say (OTEL_TRACES_EXPORTER, otlp by default, to
 * OTEL_EXPORTER_OTLP_ENDPOINT; OTEL_SERVICE_NAME over the program's own name), with
 * spans of every gRPC call and HTTP request besides Tandem's own.
 *
 * A module apart from the package's index, because loading it loads the SDK and its
 * exporters: bin/load-program.mjs imports it only when tracing is on, after registering
 * the ESM instrumentation hook and before any program module, so that the instrumented
 * modules (@grpc/grpc-js, node:http) are patched when the program imports them.
 */
import { GrpcInstrumentation } from "@opentelemetry/instrumentation-grpc";
import { HttpInstrumentation } from "@opentelemetry/instrumentation-http";
import { NodeSDK, type NodeSDKConfiguration } from "@opentelemetry/sdk-node";
import type { SpanProcessor } from "@opentelemetry/sdk-trace";
import * as OpenTelemetry from "@opentelemetry/api";
import { setTracingShutdown, useTracingApi } from "./tracing.ts";

export interface TracingOptions {
  /** The resource's service.name, e.g. `tandem-edge`, unless OTEL_SERVICE_NAME names another. */
  serviceName: string;
  /** Where spans go. @default the exporters of OTEL_TRACES_EXPORTER, each batched */
  spanProcessors?: SpanProcessor[];
  /** Spans of gRPC calls and HTTP requests. @default true */
  instrument?: boolean;
}

/** Starts the SDK; shutdownTracing() (runProgram calls it on SIGTERM) flushes and stops it. */
export function startTracing(options: TracingOptions): void {
  const configuration: Partial<NodeSDKConfiguration> = {
    instrumentations:
      options.instrument === false ? [] : [new GrpcInstrumentation(), new HttpInstrumentation()],
    // Traces only: metrics are the programs' Prometheus endpoints, logs are pino's lines.
    metricReaders: [],
    logRecordProcessors: [],
  };
  if (!process.env.OTEL_SERVICE_NAME) configuration.serviceName = options.serviceName;
  if (options.spanProcessors) configuration.spanProcessors = options.spanProcessors;
  const sdk = new NodeSDK(configuration);
  sdk.start();
  // Tandem's own spans go through the API only from here on (tracing.ts).
  useTracingApi(OpenTelemetry);
  setTracingShutdown(() => sdk.shutdown());
}
