/**
 * `tandem-edge`: the agent installed on a device. Settings from a JSON file (--config),
 * TANDEM_EDGE_* variables and flags; serves until SIGTERM or SIGINT, then drains open
 * streams.
 */
import { runProgram, type ProgramDefinition } from "@tandem/common";
import { startEdgeAgent } from "./edge-agent.ts";
import { EDGE_CONFIG_SCHEMA, EDGE_ENV_PREFIX } from "./edge-config.ts";

/** Open Generate streams get this long to finish when the agent stops. */
const DRAIN_MS = 5000;

export const EDGE_PROGRAM: ProgramDefinition<typeof EDGE_CONFIG_SCHEMA> = {
  name: "tandem-edge",
  summary: "The edge agent: the first layers of a model with early exits, escalating to a cloud worker.",
  schema: EDGE_CONFIG_SCHEMA,
  envPrefix: EDGE_ENV_PREFIX,
  async start(config, log, { metrics }) {
    const agent = await startEdgeAgent(config, log, { metrics });
    const http = agent.http ? ` http ${agent.http.address}` : "";
    return { readyLine: `listening ${agent.server.address}${http}`, close: () => agent.close(DRAIN_MS) };
  },
};

export function main(argv: string[]): Promise<number> {
  return runProgram(EDGE_PROGRAM, argv);
}
