/** @tandem/edge-agent: `tandem-edge`, the agent installed on a device. */
export { startEdgeAgent, type EdgeAgent } from "./edge-agent.ts";
export { EDGE_CONFIG_SCHEMA, EDGE_ENV_PREFIX, type EdgeConfig } from "./edge-config.ts";
export { DEFAULT_REQUEST_LIMITS, type RequestLimits } from "./inference-service.ts";
export { EDGE_PROGRAM, main } from "./main.ts";
export {
  CloudLinks,
  CloudSession,
  DEFAULT_CLOUD_LINK_OPTIONS,
  type CloudLinkOptions,
  type EdgeIdentity,
} from "./cloud-link.ts";
export { StaticCloudRoute, type CloudRoute } from "./cloud-route.ts";
// Types only: a value export would load prom-client into every edge, metrics on or off.
export type { EdgeMetrics, EdgeMetricsOptions, GenerationApi, GenerationOutcome } from "./edge-metrics.ts";
export { EDGE_SPANS, runInRequestSpan } from "./edge-tracing.ts";
