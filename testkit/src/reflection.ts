/**
 * Server reflection as grpcurl uses it: a grpc.reflection.v1 client, built from the
 * reflection package's own .proto file.
 */
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

/** grpc.reflection.v1: the names of the services a server lists. */
export async function listServices(address: string): Promise<string[]> {
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
