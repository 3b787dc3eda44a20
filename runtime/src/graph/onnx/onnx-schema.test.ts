import { readFileSync } from "node:fs";
import protobuf from "protobufjs";
import { describe, expect, it } from "vitest";
import { ONNX_SCHEMA } from "./generated/onnx-schema.ts";
import { ATTRIBUTE_TYPE, DATA_LOCATION, DATA_TYPE } from "./onnx-schema.ts";

const root = protobuf.Root.fromJSON(ONNX_SCHEMA as protobuf.INamespace);

/**
 * ONNX's own numbers (onnx/onnx.proto upstream) of every field the graph writer sets,
 * written out a second time so that an edit of onnx.proto that renumbers one fails here
 * rather than in ONNX Runtime.
 */
const UPSTREAM_FIELD_NUMBERS: Record<string, Record<string, number>> = {
  ModelProto: { irVersion: 1, producerName: 2, graph: 7, opsetImport: 8 },
  OperatorSetIdProto: { domain: 1, version: 2 },
  GraphProto: { node: 1, name: 2, initializer: 5, input: 11, output: 12 },
  NodeProto: { input: 1, output: 2, name: 3, opType: 4, attribute: 5, domain: 7 },
  AttributeProto: { name: 1, f: 2, i: 3, s: 4, floats: 7, ints: 8, type: 20 },
  TensorProto: { dims: 1, dataType: 2, name: 8, rawData: 9, externalData: 13, dataLocation: 14 },
  StringStringEntryProto: { key: 1, value: 2 },
  ValueInfoProto: { name: 1, type: 2 },
  TypeProto: { tensorType: 1 },
  "TypeProto.Tensor": { elemType: 1, shape: 2 },
  TensorShapeProto: { dim: 1 },
  "TensorShapeProto.Dimension": { dimValue: 1, dimParam: 2 },
};

describe("ONNX schema", () => {
  it("is what generate-onnx-schema.mjs makes of onnx.proto", () => {
    // Parsed with the generator's options; on a difference, rerun the generator.
    const source = readFileSync(new URL("./onnx.proto", import.meta.url), "utf8");
    const parsed: unknown = JSON.parse(JSON.stringify(protobuf.parse(source).root.toJSON()));
    expect(JSON.parse(JSON.stringify(ONNX_SCHEMA))).toEqual(parsed);
  });

  it("numbers the fields the graph writer sets as ONNX does", () => {
    for (const [message, fields] of Object.entries(UPSTREAM_FIELD_NUMBERS)) {
      const type = root.lookupType(`onnx.${message}`);
      for (const [field, id] of Object.entries(fields))
        expect([message, field, type.fields[field]?.id]).toEqual([message, field, id]);
    }
  });

  it("keeps ONNX's packing: dims, ints and floats unpacked (proto2 default), typed data packed", () => {
    const tensor = root.lookupType("onnx.TensorProto");
    const attribute = root.lookupType("onnx.AttributeProto");
    expect([tensor.fields.dims.packed, attribute.fields.ints.packed, attribute.fields.floats.packed]).toEqual(
      [false, false, false],
    );
    expect([tensor.fields.floatData.packed, tensor.fields.int64Data.packed]).toEqual([true, true]);
  });

  it("has ONNX's enum values", () => {
    expect(DATA_TYPE).toMatchObject({
      FLOAT: 1,
      UINT8: 2,
      INT8: 3,
      INT32: 6,
      INT64: 7,
      BOOL: 9,
      FLOAT16: 10,
    });
    expect(DATA_LOCATION).toEqual({ DEFAULT: 0, EXTERNAL: 1 });
    expect(ATTRIBUTE_TYPE).toMatchObject({ FLOAT: 1, INT: 2, STRING: 3, FLOATS: 6, INTS: 7 });
  });
});
