/**
 * What every Tandem gRPC server has: standard health checking, server reflection, a
 * bound port, and a graceful shutdown that reports NOT_SERVING, drains open streams for
 * a grace period, then cancels what is left.
 *
 * Reflection is a tool for people (grpcurl, Postman), not on any request's path: it is
 * loaded and added once the server reports SERVING, so it does not delay readiness.
 */
import * as grpc from "@grpc/grpc-js";
import { FailedPreconditionError, hostPort, type Logger } from "@tandem/common";
import { HealthService } from "./health-service.ts";
import { loadReflectionDefinition } from "./tandem-protos.ts";
import { serverCredentials, type ServerTlsFiles } from "./transport-security.ts";

/** How long a client connection may stay idle, live, and finish its calls once too old. */
export const CONNECTION_LIMITS = {
  idleMs: 5 * 60_000,
  maxAgeMs: 60 * 60_000,
  ageGraceMs: 10 * 60_000,
} as const;

export interface ServingOptions {
  /** @default "127.0.0.1" */
  host?: string;
  /** 0 picks a free port. @default 0 */
  port?: number;
  /** Largest message accepted, bytes: the largest legal request, sized by each server. @default 4 MiB */
  maxReceiveMessageBytes?: number;
  /** Most concurrent calls on one client connection. @default 256 */
  maxStreamsPerConnection?: number;
  /** Serve TLS from these files (mutual TLS when it names a CA). @default plaintext */
  tls?: ServerTlsFiles;
  /** Told when server reflection cannot be served. @default not told */
  log?: Logger;
}

export interface RunningServer {
  server: grpc.Server;
  health: HealthService;
  port: number;
  address: string;
  /**
   * Sets what health checks report, without refusing calls: NOT_SERVING while a server
   * drains takes it out of load balancers' rotation while its peers still reach it.
   */
  setServing(serving: boolean): void;
  /**
   * Resolves once server reflection is served too, or with the reason it could not be
   * (the .proto files missing from an install, say): a tool's convenience, never fatal.
   */
  reflection: Promise<Error | undefined>;
  /** Stops accepting calls, lets open ones finish for `graceMs`, then cancels them. */
  shutdown(graceMs?: number): Promise<void>;
}

export async function startGrpcServer(
  services: {
    name: string;
    definition: grpc.ServiceDefinition;
    handlers: grpc.UntypedServiceImplementation;
  }[],
  options: ServingOptions = {},
): Promise<RunningServer> {
  const server = new grpc.Server({
    "grpc.max_receive_message_length": options.maxReceiveMessageBytes ?? 4 * 2 ** 20,
    "grpc.max_concurrent_streams": options.maxStreamsPerConnection ?? 256,
    // Clients may ping to keep a quiet link up, but not more often than this.
    "grpc.keepalive_permit_without_calls": 1,
    "grpc.http2.min_ping_interval_without_data_ms": 5000,
    // Connections do not live for ever: an idle one closes, an old one is asked to
    // reconnect (spreading clients over new replicas), its open calls given time to end.
    "grpc.max_connection_idle_ms": CONNECTION_LIMITS.idleMs,
    "grpc.max_connection_age_ms": CONNECTION_LIMITS.maxAgeMs,
    "grpc.max_connection_age_grace_ms": CONNECTION_LIMITS.ageGraceMs,
  });
  const health = new HealthService({
    "": "NOT_SERVING",
    ...Object.fromEntries(services.map((s) => [s.name, "NOT_SERVING" as const])),
  });
  health.addToServer(server);
  for (const service of services) server.addService(service.definition, service.handlers);
  const host = options.host ?? "127.0.0.1";
  const address = hostPort(host, options.port ?? 0);
  const credentials = await serverCredentials(options.tls);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(address, credentials, (error, bound) =>
      error
        ? // The address is the operator's to change (taken, or not this machine's).
          reject(
            new FailedPreconditionError("port", `cannot listen on ${address}: ${error.message}`, {
              cause: error,
            }),
          )
        : resolve(bound),
    ),
  );
  const setServing = (serving: boolean) => {
    for (const name of ["", ...services.map((s) => s.name)])
      health.setStatus(name, serving ? "SERVING" : "NOT_SERVING");
  };
  setServing(true);
  const reflection = Promise.all([import("@grpc/reflection"), loadReflectionDefinition()])
    .then(([{ ReflectionService }, packageDefinition]) => {
      // Only what this server serves: edge and worker share one package definition. Adding
      // it reads reflection's own .proto files, which can fail too: caught below, not a crash.
      new ReflectionService(packageDefinition, { services: services.map((s) => s.name) }).addToServer(server);
      return undefined;
    })
    .catch((error: unknown) => {
      const reason = error instanceof Error ? error : new Error(String(error));
      options.log?.warn({ err: reason }, "server reflection is off: its .proto files could not be read");
      return reason;
    });
  return {
    reflection,
    server,
    health,
    port,
    address: hostPort(host, port),
    setServing,
    async shutdown(graceMs = 5000) {
      setServing(false);
      // Watchers have seen NOT_SERVING; their calls would otherwise hold the drain open.
      health.endWatches();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    },
  };
}
