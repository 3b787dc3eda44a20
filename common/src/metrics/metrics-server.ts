/**
 * A program's Prometheus endpoint: GET /metrics renders the program's own Registry; any
 * other path is 404. node:http suffices for one route, and the port is bound only on the
 * host given (0.0.0.0 in a pod, loopback on a machine that must not expose it).
 */
import { createServer, type Server } from "node:http";
import type { Registry } from "prom-client";
import { FailedPreconditionError } from "../errors.ts";
import { hostPort } from "../host-port.ts";
import type { Logger } from "../logger.ts";
import { listenAddressParts } from "../metrics-settings.ts";

export interface MetricsServerOptions {
  /** `host:port`; port 0 picks a free one. */
  address: string;
  registry: Registry;
  log: Logger;
}

export interface MetricsServer {
  /** The bound `host:port` (the port chosen when 0 was asked for). */
  address: string;
  close(): Promise<void>;
}

export async function startMetricsServer(options: MetricsServerOptions): Promise<MetricsServer> {
  const { registry, log } = options;
  const server = createServer((request, response) => {
    const path = (request.url ?? "/").split("?")[0];
    if (path !== "/metrics" || (request.method !== "GET" && request.method !== "HEAD")) {
      response
        .writeHead(404, { "content-type": "text/plain" })
        .end("not found: the metrics are at GET /metrics\n");
      return;
    }
    registry.metrics().then(
      (text) => response.writeHead(200, { "content-type": registry.contentType }).end(text),
      (error: unknown) => {
        // A collect() that throws must not take the endpoint down: the scrape fails, visibly.
        log.warn({ err: (error as Error).message }, "metrics collection failed");
        response.writeHead(500, { "content-type": "text/plain" }).end("metrics collection failed\n");
      },
    );
  });
  const { host, port } = listenAddressParts(options.address);
  await listen(server, host, port, options.address);
  const bound = server.address();
  const address = typeof bound === "object" && bound ? hostPort(host, bound.port) : options.address;
  log.info({ address }, "serving metrics");
  return {
    address,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Keep-alive scrapers would hold close() open until their sockets time out.
        server.closeAllConnections();
      }),
  };
}

function listen(server: Server, host: string, port: number, address: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", (error) =>
      reject(
        new FailedPreconditionError("metricsAddress", `cannot listen on ${address}: ${error.message}`, {
          cause: error,
        }),
      ),
    );
    server.listen(port, host, () => resolve());
  });
}
