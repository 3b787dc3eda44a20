/**
 * `tandem-control-plane`: one control-plane replica. Run several; one leads at a time.
 * Configuration from --config FILE, TANDEM_CONTROL_* variables and flags.
 */
import { hostname } from "node:os";
import { connect } from "@nats-io/transport-node";
import { describeSchema, loadConfig, parseConfigArgs, type ConfigSchema } from "@tandem/common";
import { createLogger } from "@tandem/common";
import { Controller } from "./controller.ts";

export const CONTROL_CONFIG_SCHEMA = {
  natsUrl: { type: "string", default: "nats://127.0.0.1:4222", description: "NATS server(s) with JetStream" },
  cluster: {
    type: "string",
    default: "default",
    description: "cluster name (namespaces buckets and subjects)",
  },
  replicaId: { type: "string", default: `${hostname()}-${process.pid}`, description: "name of this replica" },
  shardCount: { type: "integer", default: 4096, min: 1, description: "virtual KV shards" },
  tickMs: { type: "integer", default: 500, min: 10, description: "control loop interval" },
  leaseTtlMs: { type: "integer", default: 3000, min: 100, description: "leader lease duration" },
  heartbeatTtlMs: {
    type: "integer",
    default: 2000,
    min: 100,
    description: "a worker is dead after this long without a heartbeat",
  },
  experts: {
    type: "integer",
    default: 0,
    min: 0,
    description: "MoE experts to place: experts per layer × cloud layers (0: dense model)",
  },
  expertWindowMs: { type: "integer", default: 5000, min: 50, description: "expert load window" },
} as const satisfies ConfigSchema;

export async function main(argv: string[]): Promise<number> {
  const { file, help, overrides } = parseConfigArgs(CONTROL_CONFIG_SCHEMA, argv);
  if (help) {
    console.log(
      `usage: tandem-control-plane [--config FILE] [--key value ...]\n\n${describeSchema(CONTROL_CONFIG_SCHEMA, "TANDEM_CONTROL")}`,
    );
    return 0;
  }
  const config = loadConfig(CONTROL_CONFIG_SCHEMA, { file, envPrefix: "TANDEM_CONTROL", overrides });
  const log = createLogger("control-plane", { replica: config.replicaId });
  const nc = await connect({ servers: config.natsUrl, maxReconnectAttempts: -1, reconnectTimeWait: 250 });
  const controller = await Controller.start(nc, config, log);
  process.stdout.write(`running ${config.replicaId}\n`);
  await new Promise<void>((resolve) => {
    process.once("SIGTERM", resolve);
    process.once("SIGINT", resolve);
  });
  await controller.stop();
  await nc.close();
  return 0;
}
