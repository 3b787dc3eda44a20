/**
 * Loads Tandem's .proto files for @grpc/grpc-js and re-exports their generated types.
 * The loader options must match the flags in proto/generate.sh, which produced the types.
 */
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { ProtoGrpcType as CloudWorkerProto } from "./generated/cloud_worker.ts";
import type { ProtoGrpcType as InferenceProto } from "./generated/inference.ts";

/** The package root, where tandem/v1/*.proto live (this module runs from src/ or dist/). */
export const PROTO_DIR = join(dirname(fileURLToPath(import.meta.url)), "..");
export const PROTO_FILES = ["tandem/v1/inference.proto", "tandem/v1/cloud_worker.proto"];

export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTO_DIR],
};

let loaded:
  | { definition: protoLoader.PackageDefinition; tandem: (InferenceProto & CloudWorkerProto)["tandem"] }
  | undefined;

/** The package definition (for reflection) and the typed `tandem.v1` namespace. */
export function loadTandemProtos(): NonNullable<typeof loaded> {
  if (!loaded) {
    const definition = protoLoader.loadSync(
      PROTO_FILES.map((f) => join(PROTO_DIR, f)),
      LOADER_OPTIONS,
    );
    const root = grpc.loadPackageDefinition(definition) as unknown as InferenceProto & CloudWorkerProto;
    loaded = { definition, tandem: root.tandem };
  }
  return loaded;
}

export type { CloudWorkerClient } from "./generated/tandem/v1/CloudWorker.ts";
export type { CloudWorkerHandlers } from "./generated/tandem/v1/CloudWorker.ts";
export type { InferenceClient, InferenceHandlers } from "./generated/tandem/v1/Inference.ts";
export type { EdgeMessage, EdgeMessage__Output } from "./generated/tandem/v1/EdgeMessage.ts";
export type { CloudMessage, CloudMessage__Output } from "./generated/tandem/v1/CloudMessage.ts";
export type { OpenSession__Output } from "./generated/tandem/v1/OpenSession.ts";
export type { HiddenStateFrame, HiddenStateFrame__Output } from "./generated/tandem/v1/HiddenStateFrame.ts";
export type { GenerateRequest, GenerateRequest__Output } from "./generated/tandem/v1/GenerateRequest.ts";
export type { GenerateEvent, GenerateEvent__Output } from "./generated/tandem/v1/GenerateEvent.ts";
export type { HiddenStateCodec__Output as HiddenStateCodecName } from "./generated/tandem/v1/HiddenStateCodec.ts";
