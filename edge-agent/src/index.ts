/** @tandem/edge-agent: `tandem-edge`, the agent installed on a device. */
export { startEdgeAgent, type EdgeAgent } from "./edge-agent.ts";
export { EDGE_CONFIG_SCHEMA, type EdgeConfig } from "./edge-config.ts";
export { main } from "./main.ts";
export { CloudLinks, CloudSession, type CloudLinkOptions, type EdgeIdentity } from "./cloud-link.ts";
export { PlacementCloudRoute, StaticCloudRoute, type CloudRoute } from "./cloud-route.ts";
