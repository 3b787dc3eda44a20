/**
 * The ONNX protobuf schema as the graph writer uses it: enum values read straight from
 * the generated descriptor of onnx.proto, the plain-object shapes of the messages it
 * fills, and the protobufjs type that encodes them.
 *
 * protobufjs itself is loaded, and its types made, on first use: only building a graph
 * needs them, and a process that finds all its graphs in the cache should not pay for
 * loading the library (it is CommonJS, so it can be required synchronously, as the
 * synchronous graph writer needs).
 */
import { createRequire } from "node:module";
import type protobuf from "protobufjs";
import { ONNX_SCHEMA } from "./generated/onnx-schema.ts";

const onnx = ONNX_SCHEMA.nested.onnx.nested;

/** TensorProto.DataType: the element type codes of tensors and value infos. */
export const DATA_TYPE = onnx.TensorProto.nested.DataType.values;
/** TensorProto.DataLocation. */
export const DATA_LOCATION = onnx.TensorProto.nested.DataLocation.values;
/** AttributeProto.AttributeType: the discriminator every attribute must carry. */
export const ATTRIBUTE_TYPE = onnx.AttributeProto.nested.AttributeType.values;

// The messages' fields as protobufjs names them (camelCase), only those the writer sets.
// int64 fields take numbers: every value written (dims, versions, attribute ints) is far
// below 2^53.

export interface StringStringEntry {
  key: string;
  value: string;
}

export interface TensorMessage {
  name: string;
  dims: number[];
  dataType: number;
  rawData?: Uint8Array;
  dataLocation?: number;
  externalData?: StringStringEntry[];
}

export interface ValueInfoMessage {
  name: string;
  type: {
    tensorType: {
      elemType: number;
      shape: { dim: ({ dimValue: number } | { dimParam: string })[] };
    };
  };
}

export interface AttributeMessage {
  name: string;
  type: number;
  f?: number;
  i?: number;
  s?: Uint8Array;
  floats?: number[];
  ints?: number[];
}

export interface NodeMessage {
  name: string;
  opType: string;
  domain: string;
  input: string[];
  output: string[];
  attribute: AttributeMessage[];
}

export interface ModelMessage {
  irVersion: number;
  producerName: string;
  opsetImport: { domain: string; version: number }[];
  graph: {
    name: string;
    node: NodeMessage[];
    initializer: TensorMessage[];
    input: ValueInfoMessage[];
    output: ValueInfoMessage[];
  };
}

let modelProto: protobuf.Type | undefined;

/** onnx.ModelProto, built from the descriptor once per process. */
function modelProtoType(): protobuf.Type {
  // The descriptor is `as const` so the enum values above are typed; protobufjs only reads it.
  const { Root } = createRequire(import.meta.url)("protobufjs") as typeof protobuf;
  modelProto ??= Root.fromJSON(ONNX_SCHEMA as protobuf.INamespace).lookupType("onnx.ModelProto");
  return modelProto;
}

/** Serializes a model to ONNX protobuf bytes. */
export function encodeModel(model: ModelMessage): Uint8Array {
  const type = modelProtoType();
  return type.encode(type.fromObject(model)).finish();
}
