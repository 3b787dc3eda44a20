/**
 * Tandem's gRPC services for @grpc/grpc-js, built from the generated descriptor of its
 * .proto files, and their generated types. The conversion options must match the flags
 * in proto/generate.sh, which produced the types.
 */
import type * as protoLoader from "@grpc/proto-loader";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import type protobuf from "protobufjs/light.js";
import { InvalidArgumentError } from "@tandem/common";
import { TANDEM_DESCRIPTOR } from "./generated/descriptor.ts";
import type { CloudWorkerClient, CloudWorkerDefinition } from "./generated/tandem/v1/CloudWorker.ts";
import type { ExpertsClient, ExpertsDefinition } from "./generated/tandem/v1/Experts.ts";
import type { ExpertRunRequest__Output } from "./generated/tandem/v1/ExpertRunRequest.ts";
import type { EdgeMessage__Output } from "./generated/tandem/v1/EdgeMessage.ts";
import type { GenerateRequest__Output } from "./generated/tandem/v1/GenerateRequest.ts";
import type { ListModelsRequest__Output } from "./generated/tandem/v1/ListModelsRequest.ts";
import type { InferenceClient, InferenceDefinition } from "./generated/tandem/v1/Inference.ts";
import type { HealthClient, HealthDefinition } from "./generated/grpc/health/v1/Health.ts";
import {
  clientConstructorOf,
  type GrpcClientConstructor,
  type MessageConversion,
  messageDecoderOf,
  rootOf,
} from "./service-definitions.ts";

export { withUndecodedRequests } from "./service-definitions.ts";

/**
 * The package root, where tandem/v1/*.proto live: one up from its entry module (src/ or
 * dist/), found by the package's name rather than from this module's own path, which
 * inside a program's bundle is the bundle's.
 */
export const PROTO_DIR = join(dirname(createRequire(import.meta.url).resolve("@tandem/proto")), "..");
/** The files the descriptor was generated from (proto/write-descriptor.mjs lists the same). */
export const PROTO_FILES = [
  "tandem/v1/inference.proto",
  "tandem/v1/cloud_worker.proto",
  "grpc/health/v1/health.proto",
];

/** Decoded messages: int64 as decimal strings, enums by name, every field present, oneof names set. */
export const MESSAGE_CONVERSION: MessageConversion = {
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

export interface TandemServices {
  tandem: {
    v1: {
      Inference: GrpcClientConstructor<InferenceClient, InferenceDefinition>;
      CloudWorker: GrpcClientConstructor<CloudWorkerClient, CloudWorkerDefinition>;
      Experts: GrpcClientConstructor<ExpertsClient, ExpertsDefinition>;
    };
  };
  grpc: { health: { v1: { Health: GrpcClientConstructor<HealthClient, HealthDefinition> } } };
}

let root: protobuf.Root | undefined;
let loaded: TandemServices | undefined;

/** The root of every Tandem message, built once: services and request decoders share it. */
function tandemRoot(): protobuf.Root {
  root ??= rootOf(TANDEM_DESCRIPTOR);
  return root;
}

/** The services' client constructors, each with its server definition as `.service`. */
export function loadTandemProtos(): TandemServices {
  if (!loaded) {
    const root = tandemRoot();
    loaded = {
      tandem: {
        v1: {
          Inference: clientConstructorOf(root, "tandem.v1.Inference", MESSAGE_CONVERSION),
          CloudWorker: clientConstructorOf(root, "tandem.v1.CloudWorker", MESSAGE_CONVERSION),
          Experts: clientConstructorOf(root, "tandem.v1.Experts", MESSAGE_CONVERSION),
        },
      },
      grpc: {
        health: { v1: { Health: clientConstructorOf(root, "grpc.health.v1.Health", MESSAGE_CONVERSION) } },
      },
    };
  }
  return loaded;
}

/** The requests servers take as bytes (withUndecodedRequests) and decode with decodeRequest, by message name. */
export interface UndecodedRequests {
  "tandem.v1.EdgeMessage": EdgeMessage__Output;
  "tandem.v1.ExpertRunRequest": ExpertRunRequest__Output;
  "tandem.v1.GenerateRequest": GenerateRequest__Output;
  "tandem.v1.ListModelsRequest": ListModelsRequest__Output;
}

const requestDecoders = new Map<keyof UndecodedRequests, (bytes: Buffer) => object>();

/**
 * A request a handler took as bytes, decoded as the services' own deserializers decode it.
 * Bytes that are no such message are the caller's error: InvalidArgumentError naming
 * `field` and the message type, so the call ends INVALID_ARGUMENT like any bad request.
 */
export function decodeRequest<Name extends keyof UndecodedRequests>(
  name: Name,
  bytes: Buffer,
  field: string,
): UndecodedRequests[Name] {
  let decode = requestDecoders.get(name);
  if (!decode) {
    decode = messageDecoderOf(tandemRoot(), name, MESSAGE_CONVERSION);
    requestDecoders.set(name, decode);
  }
  try {
    return decode(bytes) as UndecodedRequests[Name];
  } catch (error) {
    throw new InvalidArgumentError(field, `is not a valid ${name} (${(error as Error).message})`, {
      cause: error,
    });
  }
}

/**
 * The package definition server reflection needs (file descriptors of every message):
 * parsed from the .proto files by @grpc/proto-loader, loaded only when asked for.
 */
export async function loadReflectionDefinition(): Promise<protoLoader.PackageDefinition> {
  const protoLoader = await import("@grpc/proto-loader");
  return protoLoader.load(
    PROTO_FILES.map((f) => join(PROTO_DIR, f)),
    { ...MESSAGE_CONVERSION, keepCase: false, includeDirs: [PROTO_DIR] },
  );
}

export type { CloudWorkerClient } from "./generated/tandem/v1/CloudWorker.ts";
export type { CloudWorkerHandlers } from "./generated/tandem/v1/CloudWorker.ts";
export type { ExpertsClient, ExpertsHandlers } from "./generated/tandem/v1/Experts.ts";
export type { ExpertRunRequest, ExpertRunRequest__Output } from "./generated/tandem/v1/ExpertRunRequest.ts";
export type { ExpertRunReply, ExpertRunReply__Output } from "./generated/tandem/v1/ExpertRunReply.ts";
export type { InferenceClient, InferenceHandlers } from "./generated/tandem/v1/Inference.ts";
export type { EdgeMessage, EdgeMessage__Output } from "./generated/tandem/v1/EdgeMessage.ts";
export type { CloudMessage, CloudMessage__Output } from "./generated/tandem/v1/CloudMessage.ts";
export type { OpenSession__Output } from "./generated/tandem/v1/OpenSession.ts";
export type { HiddenStateFrame, HiddenStateFrame__Output } from "./generated/tandem/v1/HiddenStateFrame.ts";
export type { GenerateRequest, GenerateRequest__Output } from "./generated/tandem/v1/GenerateRequest.ts";
export type { GenerateEvent, GenerateEvent__Output } from "./generated/tandem/v1/GenerateEvent.ts";
export type {
  ListModelsResponse,
  ListModelsResponse__Output,
} from "./generated/tandem/v1/ListModelsResponse.ts";
export type { ModelInfo, ModelInfo__Output } from "./generated/tandem/v1/ModelInfo.ts";
export type { HiddenStateCodec__Output as HiddenStateCodecName } from "./generated/tandem/v1/HiddenStateCodec.ts";
