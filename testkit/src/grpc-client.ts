/** Real gRPC clients for tests: the edge agent's public API (collecting a Generate stream) and health checks. */
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { protoPath as healthProtoPath } from "grpc-health-check";
import {
  loadTandemProtos,
  type CloudMessage__Output,
  type EdgeMessage,
  type GenerateEvent__Output,
  type GenerateRequest,
} from "@tandem/proto";

type TokenEvent = NonNullable<GenerateEvent__Output["token"]>;

export interface GenerateResult {
  /** Every token event, as streamed. */
  tokens: TokenEvent[];
  /** The positions of the Rollback events (verify ROLLBACK), in order. */
  rollbacks: number[];
  /** The tokens left once each rollback has withdrawn its tokens: what a client shows. */
  standing: TokenEvent[];
  summary?: GenerateEvent__Output["summary"];
  error?: grpc.ServiceError;
  /** The standing tokens' text. */
  text: string;
}

export function inferenceClient(
  address: string,
  credentials = grpc.credentials.createInsecure(),
  channelOptions: grpc.ChannelOptions = {},
) {
  const { tandem } = loadTandemProtos();
  return new tandem.v1.Inference(address, credentials, channelOptions);
}

/** How a test client connects: TLS credentials, and metadata such as an API key. @default plaintext, none */
export interface Connection {
  credentials?: grpc.ChannelCredentials;
  metadata?: grpc.Metadata;
  /** e.g. a small `grpc-node.flow_control_window`, to play a client that reads slowly. */
  channelOptions?: grpc.ChannelOptions;
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
  onToken?: (
    index: number,
    control: StreamControl,
    token: NonNullable<GenerateEvent__Output["token"]>,
  ) => Promise<void> | void,
  connection: Connection = {},
): Promise<GenerateResult> {
  const client = inferenceClient(address, connection.credentials, connection.channelOptions);
  const result: GenerateResult = { tokens: [], rollbacks: [], standing: [], text: "" };
  return new Promise((resolve) => {
    const call = client.Generate(request, connection.metadata ?? new grpc.Metadata());
    let chain = Promise.resolve();
    call.on("data", (event: GenerateEvent__Output) => {
      if (event.rollback) {
        const { position } = event.rollback;
        result.rollbacks.push(position);
        result.standing = result.standing.filter((t) => t.position < position);
        result.text = result.standing.map((t) => t.text).join("");
      }
      if (event.token) {
        result.tokens.push(event.token);
        result.standing.push(event.token);
        result.text += event.token.text;
        const index = result.tokens.length - 1;
        const token = event.token;
        if (onToken)
          chain = chain.then(() =>
            onToken(index, { pause: () => call.pause(), resume: () => call.resume() }, token),
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

/**
 * A client of grpc.health.v1 from the .proto that ships with grpc-health-check, not from
 * Tandem's own copy: a check of the server against the standard, as load balancers see it.
 */
type HealthTestClient = grpc.Client & {
  check(
    req: { service: string },
    options: grpc.CallOptions,
    cb: (e: grpc.ServiceError | null, r: { status: string }) => void,
  ): void;
  watch(req: { service: string }): grpc.ClientReadableStream<{ status: string }>;
  list(
    req: object,
    options: grpc.CallOptions,
    cb: (e: grpc.ServiceError | null, r: { statuses: Record<string, { status: string }> }) => void,
  ): void;
};

let healthConstructor: grpc.ServiceClientConstructor | undefined;

export function healthClient(address: string): HealthTestClient {
  healthConstructor ??= (
    grpc.loadPackageDefinition(protoLoader.loadSync(healthProtoPath, { enums: String })) as unknown as {
      grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } };
    }
  ).grpc.health.v1.Health;
  return new healthConstructor(address, grpc.credentials.createInsecure()) as unknown as HealthTestClient;
}

/** What Check answers for `service` ("" for the server); rejects with the call's error, e.g. NOT_FOUND. */
export async function healthStatus(address: string, service: string): Promise<string> {
  const client = healthClient(address);
  try {
    return await new Promise<string>((resolve, reject) =>
      client.check({ service }, { deadline: Date.now() + 5000 }, (e, r) =>
        e ? reject(e) : resolve(r.status),
      ),
    );
  } finally {
    client.close();
  }
}

/** What List answers: every service's status. */
export async function healthList(address: string): Promise<Record<string, string>> {
  const client = healthClient(address);
  try {
    const reply = await new Promise<{ statuses: Record<string, { status: string }> }>((resolve, reject) =>
      client.list({}, { deadline: Date.now() + 5000 }, (e, r) => (e ? reject(e) : resolve(r))),
    );
    return Object.fromEntries(Object.entries(reply.statuses).map(([name, { status }]) => [name, status]));
  } finally {
    client.close();
  }
}

/**
 * Resolves once the server at `address` reports SERVING on the standard health service,
 * polling every `pollMs`. Each poll uses a fresh channel, so none waits out a reconnect
 * backoff from attempts refused before the server listened. Rejects after `timeoutMs`.
 */
export async function waitUntilServing(address: string, timeoutMs = 60_000, pollMs = 5): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const client = healthClient(address);
    const status = await new Promise<string | undefined>((resolve) =>
      client.check({ service: "" }, { deadline: Date.now() + 250 }, (e, r) =>
        resolve(e ? undefined : r.status),
      ),
    );
    client.close();
    if (status === "SERVING") return;
    if (Date.now() > deadline) throw new Error(`${address} did not report SERVING within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

/**
 * A hand-rolled CloudWorker/Escalate stream, as an edge (or an attacker with the .proto
 * files) would open it: send messages, read replies in order, and the status it ends with.
 */
export function escalateStream(address: string, credentials = grpc.credentials.createInsecure()) {
  const { tandem } = loadTandemProtos();
  const client = new tandem.v1.CloudWorker(address, credentials);
  const stream = client.Escalate();
  const replies: CloudMessage__Output[] = [];
  const waiters: (() => void)[] = [];
  stream.on("data", (m: CloudMessage__Output) => {
    replies.push(m);
    waiters.splice(0).forEach((w) => w());
  });
  let ended = false;
  const status = new Promise<grpc.StatusObject | grpc.ServiceError>((resolve) => {
    stream.on("error", (e: grpc.ServiceError) => resolve(e));
    stream.on("status", (s: grpc.StatusObject) => resolve(s));
  });
  void status.then(() => {
    ended = true;
    waiters.splice(0).forEach((w) => w());
  });
  return {
    send: (m: EdgeMessage) => stream.write(m),
    replies,
    /** The count-th reply; throws if the stream ends before it arrives. */
    async next(count: number): Promise<CloudMessage__Output> {
      while (replies.length < count && !ended) await new Promise<void>((r) => waiters.push(r));
      if (replies.length < count) throw new Error(`the stream ended after ${replies.length} replies`);
      return replies[count - 1];
    },
    status,
    end: () => {
      stream.end();
      client.close();
    },
  };
}
