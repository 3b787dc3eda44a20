/**
 * What every Tandem server offers besides its own service: standard health checking and
 * server reflection (added once the server is SERVING), so grpcurl and load balancers
 * work against it without Tandem's .proto files.
 */
import { join } from "node:path";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startCloudWorker, type CloudWorker } from "@tandem/cloud-worker";
import { TINY_LLAMA, writeRandomCheckpoint } from "@tandem/runtime/testing";
import { startGrpcServer } from "@tandem/proto";
import { healthClient, healthList, healthStatus, listServices, startProgram, until } from "@tandem/testkit";

const DEMO_MODEL = join(import.meta.dirname, "..", "models", "tandem-demo");
let dir: string;
let worker: CloudWorker;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "tandem-services-"));
  await writeRandomCheckpoint(join(dir, "model"), { ...TINY_LLAMA, seed: 4 });
  worker = await startCloudWorker(
    { modelDir: join(dir, "model"), split: 2, workerId: "w", cacheDir: join(dir, "graphs") },
    pino({ level: "silent" }),
  );
});
afterAll(async () => {
  await worker?.close(100);
  rmSync(dir, { recursive: true, force: true });
});

describe("a Tandem gRPC server", () => {
  it("reports SERVING on the standard health service, for itself and for its service", async () => {
    expect(await healthStatus(worker.server.address, "")).toBe("SERVING");
    expect(await healthStatus(worker.server.address, "tandem.v1.CloudWorker")).toBe("SERVING");
  });

  it("answers NOT_FOUND for a service it does not serve, and lists what it serves", async () => {
    await expect(healthStatus(worker.server.address, "tandem.v1.Inference")).rejects.toMatchObject({
      code: grpc.status.NOT_FOUND,
      details: expect.stringContaining("tandem.v1.Inference"),
    });
    expect(await healthList(worker.server.address)).toEqual({
      "": "SERVING",
      "tandem.v1.CloudWorker": "SERVING",
    });
  });

  it("streams each change of status to a watcher, and ends the watch when it shuts down", async () => {
    const server = await startGrpcServer([]);
    const client = healthClient(server.address);
    try {
      const seen: string[] = [];
      const unknown: string[] = [];
      const watch = client.watch({ service: "" });
      watch.on("data", (reply: { status: string }) => seen.push(reply.status));
      const ended = new Promise<grpc.StatusObject>((resolve) => watch.on("status", resolve));
      const other = client.watch({ service: "no.such.Service" });
      other.on("data", (reply: { status: string }) => unknown.push(reply.status));
      other.on("error", () => {});
      await expect.poll(() => seen).toEqual(["SERVING"]);
      server.setServing(false);
      server.setServing(true);
      await expect.poll(() => seen).toEqual(["SERVING", "NOT_SERVING", "SERVING"]);
      // A service it does not have is reported, without ending the call.
      await expect.poll(() => unknown).toEqual(["SERVICE_UNKNOWN"]);
      // Ended by the server (OK) once NOT_SERVING is sent, not cancelled when the grace runs out.
      await server.shutdown(60_000);
      expect((await ended).code).toBe(grpc.status.OK);
      expect(seen.at(-1)).toBe("NOT_SERVING");
    } finally {
      client.close();
    }
  });

  it("lists the services it serves through server reflection", async () => {
    await worker.server.reflection;
    expect(await listServices(worker.server.address)).toEqual(["tandem.v1.CloudWorker"]);
  });

  it("lists its services through reflection as its program runs it too, from the build's bundle", async () => {
    // The bundle holds every module but @grpc/reflection's, which reads its own .proto files.
    const edge = await startProgram("tandem-edge", { model: DEMO_MODEL });
    try {
      let services: string[] = [];
      await until("reflection to answer", async () => {
        services = await listServices(edge.address).catch(() => []);
        return services.length > 0;
      });
      expect(services).toEqual(["tandem.v1.Inference"]);
      expect(edge.output()).not.toMatch(/server reflection is off/);
    } finally {
      await edge.kill();
    }
  });
});
