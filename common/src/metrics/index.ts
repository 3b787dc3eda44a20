/**
 * @tandem/common/metrics: Prometheus metrics, apart from the package's index so a program
 * that serves none never loads prom-client. Each program defines its metrics in one
 * module of its own, on the Registry runProgram hands it.
 */
export { Counter, Gauge, Histogram, Registry } from "prom-client";
export { createProgramRegistry } from "./program-registry.ts";
export { startMetricsServer, type MetricsServer, type MetricsServerOptions } from "./metrics-server.ts";
export { BucketHistogram, type BucketHistogramOptions } from "./bucket-histogram.ts";
