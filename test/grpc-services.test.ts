/**
 * What every Tandem server offers besides its own service: standard health checking and
 * server reflection (added once the server is SERVING), so grpcurl and load balancers
 * work against it without Tandem's .proto files.
 */
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startCloudWorker, type CloudWorker } from "@tandem/cloud-worker";
import { TINY_LLAMA, writeRandomCheckpoint } from "@tandem/runtime";
import { healthStatus } from "@tandem/testkit";

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

/** grpc.reflection.v1: the names of the services a server lists. */
async function listServices(address: string): Promise<string[]> {
  const reflectionPackage = dirname(createRequire(import.meta.url).resolve("@grpc/reflection/package.json"));
  const definition = protoLoader.loadSync(
    join(reflectionPackage, "build/proto/grpc/reflection/v1/reflection.proto"),
  );
  const { ServerReflection } = (
    grpc.loadPackageDefinition(definition) as unknown as {
      grpc: { reflection: { v1: { ServerReflection: grpc.ServiceClientConstructor } } };
    }
  ).grpc.reflection.v1;
  const client = new ServerReflection(
    address,
    grpc.credentials.createInsecure(),
  ) as unknown as grpc.Client & {
    ServerReflectionInfo: () => grpc.ClientDuplexStream<
      object,
      { listServicesResponse?: { service: { name: string }[] } }
    >;
  };
  try {
    return await new Promise((resolve, reject) => {
      const call = client.ServerReflectionInfo();
      call.on("data", (reply: { listServicesResponse?: { service: { name: string }[] } }) => {
        resolve(reply.listServicesResponse!.service.map((s) => s.name));
        call.end();
      });
      call.on("error", reject);
      call.write({ listServices: "" });
    });
  } finally {
    client.close();
  }
}

describe("a Tandem gRPC server", () => {
  it("reports SERVING on the standard health service, for itself and for its service", async () => {
    expect(await healthStatus(worker.server.address, "")).toBe("SERVING");
    expect(await healthStatus(worker.server.address, "tandem.v1.CloudWorker")).toBe("SERVING");
  });

  it("lists the services it serves through server reflection", async () => {
    await worker.server.reflection;
    expect(await listServices(worker.server.address)).toEqual(["tandem.v1.CloudWorker"]);
  });
});
