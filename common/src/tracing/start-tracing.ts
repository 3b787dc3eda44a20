/**
 * Starts OpenTelemetry's SDK for a program (the edge and the worker call it before their
 * main) when TANDEM_TRACING is 1 or true. OTEL_TRACES_EXPORTER alone does not turn it on:
 * its standard default (otlp) would make an unset variable mean "on". Once on, the OTEL_*
 * variables say where spans go. Off, no module of OpenTelemetry is loaded.
 */
export async function startTracingIfAsked(serviceName: string): Promise<void> {
  if (!["1", "true"].includes(process.env.TANDEM_TRACING ?? "")) return;
  const { startTracing } = await import("./tracing-sdk.ts");
  startTracing({ serviceName });
}
