/**
 * `tandem-control-plane`: one control-plane replica. Run several; one leads at a time.
 * Settings from --config FILE, TANDEM_CONTROL_* variables and flags.
 */
import { hostname } from "node:os";
import { connectNats } from "@tandem/cluster";
import { natsCredentialsOf, runProgram, type ProgramDefinition } from "@tandem/common";
import { CONTROL_CONFIG_SCHEMA, CONTROL_ENV_PREFIX } from "./control-config.ts";
import { Controller } from "./controller.ts";

const replicaIdOf = (configured: string | undefined) => configured ?? `${hostname()}-${process.pid}`;

export const CONTROL_PROGRAM: ProgramDefinition<typeof CONTROL_CONFIG_SCHEMA> = {
  name: "tandem-control-plane",
  summary: "A control-plane replica: membership, the leader lease, shard and expert placement on NATS.",
  schema: CONTROL_CONFIG_SCHEMA,
  envPrefix: CONTROL_ENV_PREFIX,
  logFields: (config) => ({ replica: replicaIdOf(config.replicaId) }),
  async start(config, log) {
    const replicaId = replicaIdOf(config.replicaId);
    const nc = await connectNats(config.natsUrl, {
      name: `tandem-control-plane ${replicaId}`,
      credentials: natsCredentialsOf(config),
    });
    const controller = await Controller.start(nc, { ...config, replicaId }, log);
    return {
      readyLine: `running ${replicaId}`,
      async close() {
        await controller.stop();
        await nc.close();
      },
    };
  },
};

export function main(argv: string[]): Promise<number> {
  return runProgram(CONTROL_PROGRAM, argv);
}
