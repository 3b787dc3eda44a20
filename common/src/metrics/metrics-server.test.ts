/**
 * A program's metrics endpoint: GET /metrics renders its own Registry (default process
 * metrics included), any other path is 404, port 0 binds a free port and reports it, and
 * a port that cannot be had is an error naming metricsAddress.
 */
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { FailedPreconditionError } from "../errors.ts";
import { Counter, createProgramRegistry, startMetricsServer, type MetricsServer } from "./index.ts";

const log = pino({ level: "silent" });
const servers: MetricsServer[] = [];
afterEach(async () => {
  for (const server of servers.splice(0)) await server.close();
});

async function start(address = "127.0.0.1:0") {
  const registry = createProgramRegistry();
  const server = await startMetricsServer({ address, registry, log });
  servers.push(server);
  return { registry, server };
}

describe("startMetricsServer", () => {
  it("binds a free port for port 0 on the host given, and reports the bound address", async () => {
    const { server } = await start();
    expect(server.address).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(server.address).not.toBe("127.0.0.1:0");
  });

  it("serves the program's registry at GET /metrics, default process metrics included", async () => {
    const { registry, server } = await start();
    new Counter({ name: "tandem_test_things_total", help: "things", registers: [registry] }).inc(3);
    const response = await fetch(`http://${server.address}/metrics`);
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await response.text();
    expect(text).toMatch(/^tandem_test_things_total 3$/m);
    expect(text).toMatch(/^# TYPE process_cpu_user_seconds_total counter$/m);
    expect(text).toMatch(/^# TYPE nodejs_eventloop_lag_seconds gauge$/m);
  });

  it("keeps each program's series apart: two registries in one process do not collide", async () => {
    const first = await start();
    const second = await start();
    new Counter({ name: "tandem_test_only_first_total", help: "x", registers: [first.registry] });
    const text = await (await fetch(`http://${second.server.address}/metrics`)).text();
    expect(text).not.toContain("tandem_test_only_first_total");
  });

  it("answers 404 to any other path or method", async () => {
    const { server } = await start();
    expect((await fetch(`http://${server.address}/`)).status).toBe(404);
    expect((await fetch(`http://${server.address}/metricsx`)).status).toBe(404);
    expect((await fetch(`http://${server.address}/metrics`, { method: "POST" })).status).toBe(404);
  });

  it("refuses a port that is taken, naming metricsAddress", async () => {
    const { server } = await start();
    const attempt = startMetricsServer({ address: server.address, registry: createProgramRegistry(), log });
    await expect(attempt).rejects.toThrow(FailedPreconditionError);
    await expect(attempt).rejects.toMatchObject({ field: "metricsAddress" });
  });

  it("stops listening on close", async () => {
    const { server } = await start();
    await server.close();
    servers.length = 0;
    await expect(fetch(`http://${server.address}/metrics`)).rejects.toThrow();
  });
});
