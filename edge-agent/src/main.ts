/**
 * `tandem-edge`: the agent installed on a device. Configuration from a JSON file
 * (--config), TANDEM_EDGE_* environment variables and flags; serves until SIGTERM or
 * SIGINT, then drains open streams.
 */
import { describeSchema, loadConfig, parseConfigArgs } from "@tandem/common";
import { createLogger } from "@tandem/common";
import { EDGE_CONFIG_SCHEMA } from "./edge-config.ts";
import { startEdgeAgent } from "./edge-agent.ts";

export async function main(argv: string[]): Promise<number> {
  const { file, help, overrides } = parseConfigArgs(EDGE_CONFIG_SCHEMA, argv);
  if (help) {
    console.log(
      `usage: tandem-edge [--config FILE] [--key value ...]\n\n${describeSchema(EDGE_CONFIG_SCHEMA, "TANDEM_EDGE")}`,
    );
    return 0;
  }
  const config = loadConfig(EDGE_CONFIG_SCHEMA, { file, envPrefix: "TANDEM_EDGE", overrides });
  const log = createLogger("edge-agent");
  const agent = await startEdgeAgent(config, log);
  process.stdout.write(`listening ${agent.server.address}\n`);
  await new Promise<void>((resolve) => {
    process.once("SIGTERM", resolve);
    process.once("SIGINT", resolve);
  });
  log.info("draining");
  await agent.close(5000);
  return 0;
}
