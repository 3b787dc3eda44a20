/**
 * `tandem-control-plane`: one control-plane replica. Run several; one leads at a time.
 * Settings from --config FILE, TANDEM_CONTROL_* variables and flags. With healthPort it
 * serves grpc.health.v1 for probes: SERVING while connected to NATS and ticking.
 */
import { hostname } from "node:os";
import type { NatsConnection } from "@nats-io/transport-node";
import { connectNats } from "@tandem/cluster";
import { natsCredentialsOf, runProgram, type ProgramDefinition } from "@tandem/common";
import { startConfiguredHealthServer } from "@tandem/proto";
import { CONTROL_CONFIG_SCHEMA, CONTROL_ENV_PREFIX } from "./control-config.ts";
import { Controller } from "./controller.ts";

const replicaIdOf = (configured: string | undefined) => configured ?? `${hostname()}-${process.pid}`;

/** How old a replica's last good tick may be, in ticks and slack, while it reports SERVING. */
const HEALTHY_TICKS = 3;
const TICK_SLACK_MS = 1000;

export const CONTROL_PROGRAM: ProgramDefinition<typeof CONTROL_CONFIG_SCHEMA> = {
  name: "tandem-control-plane",
  summary: "A control-plane replica: membership, the leader lease, shard and expert placement on NATS.",
  schema: CONTROL_CONFIG_SCHEMA,
  envPrefix: CONTROL_ENV_PREFIX,
  logFields: (config) => ({ replica: replicaIdOf(config.replicaId) }),
  async start(config, log, context) {
    const replicaId = replicaIdOf(config.replicaId);
    // Listening first: a health port that cannot be had stops the start before NATS is touched.
    const health = await startConfiguredHealthServer(config);
    let nc: NatsConnection | undefined;
    let controller: Controller;
    try {
      nc = await connectNats(config.natsUrl, {
        name: `tandem-control-plane ${replicaId}`,
        credentials: natsCredentialsOf(config),
      });
      // Loaded only by a replica that serves metrics: prom-client stays out of the others.
      const metrics =
        context.metrics &&
        new (await import("./control-plane-metrics.ts")).ControlPlaneMetrics(
          context.metrics,
          () => controller?.lease.isLeader() ?? false,
        );
      controller = await Controller.start(nc, { ...config, replicaId }, log, metrics);
    } catch (error) {
      await nc?.close();
      await health?.close();
      throw error;
    }
    const connection = nc;
    health?.reportFrom(replicaHealth(connection, controller, config.tickMs));
    if (health) log.info({ address: health.address }, "serving health checks");
    return {
      readyLine: `running ${replicaId}`,
      async close() {
        health?.stopServing();
        await controller.stop();
        await connection.close();
        await health?.close();
      },
    };
  },
};

/**
 * A replica is healthy while connected to NATS and its last good tick is recent: at most
 * HEALTHY_TICKS ticks old, plus slack for a slow one (a leader writing a large map). A
 * loop stuck on NATS, or failing every tick, goes NOT_SERVING within seconds.
 */
function replicaHealth(nc: NatsConnection, controller: Controller, tickMs: number): () => boolean {
  const tickedWithinMs = HEALTHY_TICKS * tickMs + TICK_SLACK_MS;
  // NATS away shows in the ticks: each fails within a KV request's timeout, so the last
  // good one ages past the limit.
  return () =>
    !nc.isClosed() &&
    controller.lastTickAt !== undefined &&
    Date.now() - controller.lastTickAt <= tickedWithinMs;
}

export function main(argv: string[]): Promise<number> {
  return runProgram(CONTROL_PROGRAM, argv);
}
