/** Real gRPC clients for tests: the edge agent's public API (collecting a Generate stream) and health checks. */
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { protoPath as healthProtoPath } from "grpc-health-check";
import { loadTandemProtos, type GenerateEvent__Output, type GenerateRequest } from "@tandem/proto";

export interface GenerateResult {
  tokens: NonNullable<GenerateEvent__Output["token"]>[];
  summary?: GenerateEvent__Output["summary"];
  error?: grpc.ServiceError;
  text: string;
}

export function inferenceClient(address: string) {
  const { tandem } = loadTandemProtos();
  return new tandem.v1.Inference(address, grpc.credentials.createInsecure());
}

export interface StreamControl {
  /** Stop reading: the server then blocks on flow control once its buffers fill. */
  pause(): void;
  resume(): void;
}

/** Runs Generate to the end; `onToken` may act mid-stream (kill a worker, say). */
export function generate(
  address: string,
  request: GenerateRequest,
  onToken?: (index: number, control: StreamControl) => Promise<void> | void,
): Promise<GenerateResult> {
  const client = inferenceClient(address);
  const result: GenerateResult = { tokens: [], text: "" };
  return new Promise((resolve) => {
    const call = client.Generate(request);
    let chain = Promise.resolve();
    call.on("data", (event: GenerateEvent__Output) => {
      if (event.token) {
        result.tokens.push(event.token);
        result.text += event.token.text;
        const index = result.tokens.length - 1;
        if (onToken)
          chain = chain.then(() =>
            onToken(index, { pause: () => call.pause(), resume: () => call.resume() }),
          );
      }
      if (event.summary) result.summary = event.summary;
    });
    call.on("error", (error: grpc.ServiceError) => {
      result.error = error;
    });
    call.on("close", () => {
      void chain.then(() => {
        client.close();
        resolve(result);
      });
    });
  });
}

/** The status a server's standard gRPC health service reports for `service` ("" for the server). */
export async function healthStatus(address: string, service: string): Promise<string> {
  const definition = protoLoader.loadSync(healthProtoPath, { enums: String });
  const health = grpc.loadPackageDefinition(definition) as unknown as {
    grpc: {
      health: {
        v1: {
          Health: new (
            address: string,
            credentials: grpc.ChannelCredentials,
          ) => grpc.Client & {
            check: (req: object, cb: (e: Error | null, r: { status: string }) => void) => void;
          };
        };
      };
    };
  };
  const client = new health.grpc.health.v1.Health(address, grpc.credentials.createInsecure());
  try {
    return await new Promise<string>((resolve, reject) =>
      client.check({ service }, (e, r) => (e ? reject(e) : resolve(String(r.status)))),
    );
  } finally {
    client.close();
  }
}
