/**
 * A server of grpc.health.v1 alone, for programs that serve nothing else (the control
 * plane, the batch worker): what the kubelet's gRPC probes and supervisors ask. It reports
 * the program as a whole ("") from a check of the program's own, asked every `intervalMs`.
 *
 * A second name, LIVENESS_SERVICE, is SERVING for as long as the process answers at all
 * (NOT_SERVING only as it stops): what a liveness probe should ask. A program cut off from
 * NATS or Redis is unready, not dead; restarting it would not bring them back, and a
 * replica that cannot start without them would only crash-loop until they are.
 *
 * It answers only SERVING or NOT_SERVING, without credentials and in plaintext on any
 * address: it carries nothing else (no reflection, no other service).
 */
import * as grpc from "@grpc/grpc-js";
import { FailedPreconditionError } from "@tandem/common";
import { HealthService } from "./health-service.ts";

/** The service name a liveness probe asks: SERVING while the process runs. */
export const LIVENESS_SERVICE = "liveness";

export interface HealthServerOptions {
  /** @default "127.0.0.1" */
  host?: string;
  port: number;
}

export interface HealthServer {
  port: number;
  address: string;
  /**
   * Reports what `healthy` says from now on: a program listens for probes first (a port it
   * cannot have stops its start early) and says how it is healthy once it has started.
   */
  reportFrom(healthy: () => boolean): void;
  /** Reports NOT_SERVING from now on, whatever `healthy` says (a program stopping). */
  stopServing(): void;
  /** Stops the server (NOT_SERVING first, open Watch calls ended). */
  close(): Promise<void>;
}

/** A program's health server as its settings ask (none without healthPort). */
export function startConfiguredHealthServer(settings: {
  healthHost: string;
  healthPort?: number;
}): Promise<HealthServer | undefined> {
  if (settings.healthPort === undefined) return Promise.resolve(undefined);
  return startHealthServer({ host: settings.healthHost, port: settings.healthPort });
}

/** How often the program's health is asked. */
const REPORT_INTERVAL_MS = 500;

async function startHealthServer(options: HealthServerOptions): Promise<HealthServer> {
  const health = new HealthService({ "": "NOT_SERVING", [LIVENESS_SERVICE]: "SERVING" });
  const server = new grpc.Server();
  health.addToServer(server);
  const host = options.host ?? "127.0.0.1";
  const address = `${host}:${options.port}`;
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (error, bound) =>
      error
        ? reject(
            new FailedPreconditionError("healthPort", `cannot listen on ${address}: ${error.message}`, {
              cause: error,
            }),
          )
        : resolve(bound),
    ),
  );
  // NOT_SERVING until the program says how it is healthy (reportFrom).
  let healthy = () => false;
  const report = () => health.setStatus("", healthy() ? "SERVING" : "NOT_SERVING");
  report();
  let timer: NodeJS.Timeout | undefined = setInterval(report, REPORT_INTERVAL_MS);
  // A probe server must not keep a program that is otherwise done alive.
  timer.unref();
  const stopServing = () => {
    clearInterval(timer);
    timer = undefined;
    health.setStatus("", "NOT_SERVING");
    health.setStatus(LIVENESS_SERVICE, "NOT_SERVING");
  };
  return {
    port,
    address: `${host}:${port}`,
    reportFrom(check) {
      healthy = check;
      if (timer) report();
    },
    stopServing,
    async close() {
      stopServing();
      health.endWatches();
      // Health calls are short: a second is grace enough for those in flight.
      await new Promise<void>((resolve) => {
        const force = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 1000);
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      });
    },
  };
}
