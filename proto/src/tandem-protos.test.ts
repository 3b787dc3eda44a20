import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";
import { describe, expect, it } from "vitest";
import { InvalidArgumentError } from "@tandem/common";
import { TANDEM_DESCRIPTOR } from "./generated/descriptor.ts";
import {
  decodeRequest,
  loadTandemProtos,
  PROTO_DIR,
  PROTO_FILES,
  withUndecodedRequests,
} from "./tandem-protos.ts";

/** The same services as @grpc/proto-loader builds them from the .proto files. */
function protoLoaderServices() {
  const definition = protoLoader.loadSync(
    PROTO_FILES.map((f) => join(PROTO_DIR, f)),
    // The flags of generate.sh, written out again: the types were generated with them.
    { keepCase: false, longs: String, enums: String, defaults: true, oneofs: true, includeDirs: [PROTO_DIR] },
  );
  return grpc.loadPackageDefinition(definition) as unknown as {
    tandem: { v1: Record<string, grpc.ServiceClientConstructor> };
  };
}

describe("Tandem's gRPC services", () => {
  it("are built from the descriptor write-descriptor.mjs makes of the .proto files", () => {
    // On a difference, run proto/generate.sh.
    const parsed = new protobuf.Root().loadSync(PROTO_FILES.map((f) => join(PROTO_DIR, f)));
    expect(JSON.parse(JSON.stringify(TANDEM_DESCRIPTOR))).toEqual(
      JSON.parse(JSON.stringify(parsed.toJSON())),
    );
  });

  it("encode and decode every message as @grpc/proto-loader does, which the generated types describe", () => {
    const ours = loadTandemProtos().tandem.v1;
    const theirs = protoLoaderServices().tandem.v1;
    // Requests and replies that exercise oneofs, enums by name and number, int64s, bytes,
    // repeated fields and defaults.
    const messages = {
      Inference: {
        Generate: {
          request: [
            {
              text: "héllo",
              maxTokens: 5,
              stop: ["."],
              mode: "MODE_EDGE_ONLY",
              sampling: { temperature: 0.5, seed: "7" },
            },
            { tokenIds: { ids: [1, 2, 3] }, exitPolicy: { metric: 1, threshold: 0.25 } },
            {},
          ],
          response: [
            { token: { id: 3, text: "a", source: "TOKEN_SOURCE_CLOUD", exitLayer: 2, confidence: 0.5 } },
            {
              summary: {
                finishReason: "FINISH_REASON_STOP",
                bytesSent: "18446744073709551615",
                timings: { totalMs: 1.5 },
              },
            },
          ],
        },
      },
      CloudWorker: {
        Escalate: {
          request: [
            { open: { sessionId: "s", splitLayer: 3, codec: "HIDDEN_STATE_CODEC_INT8", hiddenSize: 64 } },
            {
              frame: { start: 4, count: 1, payload: Buffer.from([1, 2, 3]), wantToken: true, requestId: "9" },
            },
            { close: {} },
          ],
          response: [
            { token: { requestId: "9", position: 4, token: 12, prob: 0.75 } },
            { contextLost: { resumeFrom: 2, reason: "evicted" } },
          ],
        },
      },
    } as const;
    for (const [service, methods] of Object.entries(messages)) {
      for (const [method, { request, response }] of Object.entries(methods)) {
        const mine = ours[service as "Inference"].service[
          method as "Generate"
        ] as unknown as grpc.MethodDefinition<object, object>;
        const reference = theirs[service]!.service[method]!;
        for (const message of request) {
          const bytes = reference.requestSerialize(message);
          expect(mine.requestSerialize(message)).toEqual(bytes);
          expect(mine.requestDeserialize(bytes)).toEqual(reference.requestDeserialize(bytes));
        }
        for (const message of response) {
          const bytes = reference.responseSerialize(message);
          expect(mine.responseSerialize(message)).toEqual(bytes);
          expect(mine.responseDeserialize(bytes)).toEqual(reference.responseDeserialize(bytes));
        }
        expect({
          ...mine,
          requestSerialize: 0,
          requestDeserialize: 0,
          responseSerialize: 0,
          responseDeserialize: 0,
        }).toEqual({
          path: reference.path,
          requestStream: reference.requestStream,
          responseStream: reference.responseStream,
          originalName: reference.originalName,
          requestSerialize: 0,
          requestDeserialize: 0,
          responseSerialize: 0,
          responseDeserialize: 0,
        });
      }
    }
  });

  it("decode requests a server takes as bytes as the services do, and name the message the bytes are not", () => {
    const theirs = protoLoaderServices().tandem.v1;
    const cases = [
      {
        name: "tandem.v1.GenerateRequest",
        method: theirs.Inference!.service.Generate!,
        mine: loadTandemProtos().tandem.v1.Inference.service,
        request: { tokenIds: { ids: [1, 2] }, sampling: { seed: "18446744073709551615" }, mode: 2 },
      },
      {
        name: "tandem.v1.EdgeMessage",
        method: theirs.CloudWorker!.service.Escalate!,
        mine: loadTandemProtos().tandem.v1.CloudWorker.service,
        request: { frame: { start: 1, count: 1, payload: Buffer.from([9]), requestId: "3" } },
      },
    ] as const;
    for (const { name, method, mine, request } of cases) {
      const bytes = method.requestSerialize(request);
      expect(decodeRequest(name, bytes, "request")).toEqual(method.requestDeserialize(bytes));
      // Registered this way, a server hands its handlers the very bytes that came.
      const [registered] = Object.values(withUndecodedRequests(mine as unknown as grpc.ServiceDefinition));
      expect(registered!.requestDeserialize(bytes)).toBe(bytes);
      expect(registered!.responseSerialize).toBe(Object.values(mine)[0]!.responseSerialize);
      // Bytes that are no protobuf message at all (a varint cut short).
      const garbage = Buffer.from([0xff, 0xff, 0xff]);
      expect(() => method.requestDeserialize(garbage)).toThrow();
      expect(() => decodeRequest(name, garbage, "request")).toThrow(InvalidArgumentError);
      expect(() => decodeRequest(name, garbage, "request")).toThrow(`request: is not a valid ${name} (`);
    }
  });
});
