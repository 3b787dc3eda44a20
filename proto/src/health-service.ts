/**
 * The standard gRPC health service (grpc.health.v1.Health): what load balancers,
 * Kubernetes' gRPC probes and supervisors ask a server before sending it work.
 *
 * Check answers a service's status (NOT_FOUND for a service this server does not have);
 * Watch sends the status at once and again at each change (SERVICE_UNKNOWN, without
 * ending the call, for a service it does not have); List answers them all. Health is
 * answered without credentials, so the open Watch calls are capped.
 */
import * as grpc from "@grpc/grpc-js";
import type { HealthHandlers } from "./generated/grpc/health/v1/Health.ts";
import type { HealthCheckResponse } from "./generated/grpc/health/v1/HealthCheckResponse.ts";
import type { HealthCheckRequest__Output } from "./generated/grpc/health/v1/HealthCheckRequest.ts";
import { loadTandemProtos } from "./tandem-protos.ts";

/** What a server reports of itself ("" is the server as a whole). */
export type ServingStatus = "SERVING" | "NOT_SERVING";

/** Most Watch calls open at once; more are refused with RESOURCE_EXHAUSTED. */
export const MAX_HEALTH_WATCHES = 1000;

type Watch = grpc.ServerWritableStream<HealthCheckRequest__Output, HealthCheckResponse>;

export class HealthService {
  private readonly statuses: Map<string, ServingStatus>;
  private readonly watches = new Set<Watch>();

  constructor(statuses: Record<string, ServingStatus>) {
    this.statuses = new Map(Object.entries(statuses));
  }

  status(service: string): ServingStatus | undefined {
    return this.statuses.get(service);
  }

  setStatus(service: string, status: ServingStatus): void {
    if (this.statuses.get(service) === status) return;
    this.statuses.set(service, status);
    for (const watch of this.watches) if (watch.request.service === service) watch.write({ status });
  }

  addToServer(server: grpc.Server): void {
    server.addService(loadTandemProtos().grpc.health.v1.Health.service, this.handlers() as never);
  }

  handlers(): HealthHandlers {
    return {
      Check: (call, callback) => {
        const status = this.statuses.get(call.request.service);
        if (status) callback(null, { status });
        else callback({ code: grpc.status.NOT_FOUND, details: `no service named "${call.request.service}"` });
      },
      Watch: (call) => {
        if (this.watches.size >= MAX_HEALTH_WATCHES) {
          call.emit("error", {
            code: grpc.status.RESOURCE_EXHAUSTED,
            details: `more than ${MAX_HEALTH_WATCHES} health watches are open`,
          });
          return;
        }
        this.watches.add(call);
        const forget = () => this.watches.delete(call);
        call.on("cancelled", forget);
        call.on("close", forget);
        call.on("error", forget);
        call.write({ status: this.statuses.get(call.request.service) ?? "SERVICE_UNKNOWN" });
      },
      List: (_call, callback) => {
        callback(null, {
          statuses: Object.fromEntries([...this.statuses].map(([service, status]) => [service, { status }])),
        });
      },
    };
  }

  /** Ends every Watch call (OK), so a server shutting down does not wait for them. */
  endWatches(): void {
    for (const watch of this.watches) watch.end();
    this.watches.clear();
  }
}
