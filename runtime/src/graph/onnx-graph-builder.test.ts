import protobuf from "protobufjs";
import { describe, expect, it } from "vitest";
import { InMemoryExternalData, OnnxGraphBuilder } from "./onnx-graph-builder.ts";
import { ONNX_SCHEMA } from "./onnx/generated/onnx-schema.ts";

const modelProto = protobuf.Root.fromJSON(ONNX_SCHEMA as protobuf.INamespace).lookupType("onnx.ModelProto");

interface Decoded {
  irVersion: number;
  opsetImport: { domain?: string; version: number }[];
  graph: {
    name: string;
    node: {
      name: string;
      opType: string;
      domain?: string;
      input: string[];
      output: string[];
      attribute?: object[];
    }[];
    initializer: {
      name: string;
      dims?: number[];
      dataType: number;
      rawData?: number[];
      dataLocation?: number;
      externalData?: { key: string; value: string }[];
    }[];
    input: object[];
    output: object[];
  };
}

function decode(model: Uint8Array): Decoded {
  return modelProto.toObject(modelProto.decode(model), {
    longs: Number,
    enums: Number,
    bytes: Array,
  }) as Decoded;
}

describe("OnnxGraphBuilder", () => {
  it("writes opsets, typed inputs and outputs with fixed and symbolic dimensions", () => {
    const b = new OnnxGraphBuilder("g", new InMemoryExternalData("g.weights"));
    b.input("x", "float32", ["batch", 4]);
    b.node("Identity", "/id", ["x"], { outputs: [b.output("y", "int64", [])] });
    const model = decode(b.build().model);
    expect(model.irVersion).toBe(8);
    expect(model.opsetImport).toEqual([
      { domain: "", version: 17 },
      { domain: "com.microsoft", version: 1 },
    ]);
    expect(model.graph.name).toBe("g");
    expect(model.graph.input).toEqual([
      {
        name: "x",
        type: { tensorType: { elemType: 1, shape: { dim: [{ dimParam: "batch" }, { dimValue: 4 }] } } },
      },
    ]);
    expect(model.graph.output).toEqual([{ name: "y", type: { tensorType: { elemType: 7, shape: {} } } }]);
  });

  it("types attributes: integers, floats, strings, int lists, float lists", () => {
    const b = new OnnxGraphBuilder("g", new InMemoryExternalData("g.weights"));
    b.op("Op", "/op", ["x"], {
      axis: -1,
      alpha: 0.5,
      epsilon: { float: 1 },
      mode: "linear",
      axes: [-1, 2 ** 40],
      scales: { floats: [0.25, 2] },
    });
    const [node] = decode(b.build().model).graph.node;
    expect(node).toMatchObject({
      name: "/op",
      opType: "Op",
      domain: "",
      input: ["x"],
      output: ["/op/output_0"],
    });
    expect(node.attribute).toEqual([
      { name: "axis", type: 2, i: -1 },
      { name: "alpha", type: 1, f: 0.5 },
      { name: "epsilon", type: 1, f: 1 },
      { name: "mode", type: 3, s: Array.from(Buffer.from("linear")) },
      { name: "axes", type: 7, ints: [-1, 2 ** 40] },
      { name: "scales", type: 6, floats: [0.25, 2] },
    ]);
  });

  it("keeps small initializers inline and puts large ones, 64-byte aligned, in the external data", () => {
    const external = new InMemoryExternalData("g.weights");
    const b = new OnnxGraphBuilder("g", external);
    b.initializer("small", "float32", [2], Float32Array.of(1, 2));
    b.initializer("odd", "uint8", [1030], new Uint8Array(1030).fill(7));
    b.initializer("big", "float32", [16, 16], new Float32Array(256).fill(3));
    const built = b.build();
    const [small, odd, big] = decode(built.model).graph.initializer;
    expect(small).toEqual({
      name: "small",
      dims: [2],
      dataType: 1,
      rawData: Array.from(new Uint8Array(Float32Array.of(1, 2).buffer)),
    });
    expect(odd).toEqual({
      name: "odd",
      dims: [1030],
      dataType: 2,
      dataLocation: 1,
      externalData: [
        { key: "location", value: "g.weights" },
        { key: "offset", value: "0" },
        { key: "length", value: "1030" },
      ],
    });
    expect(big.externalData?.[1]).toEqual({ key: "offset", value: "1088" });
    expect(built.externalDataBytes).toBe(1088 + 1024);
    const bytes = Buffer.concat(external.chunks);
    expect(bytes.length).toBe(built.externalDataBytes);
    expect(bytes.subarray(0, 1030).every((v) => v === 7)).toBe(true);
    expect(new Float32Array(bytes.buffer.slice(bytes.byteOffset + 1088, bytes.byteOffset + 2112))).toEqual(
      new Float32Array(256).fill(3),
    );
  });

  it("streams an initializer given in parts, and refuses parts that do not add up to its declared size", () => {
    const external = new InMemoryExternalData("g.weights");
    const b = new OnnxGraphBuilder("g", external);
    b.streamedInitializer("parts", "uint8", [2, 1024], 2048, (append) => {
      append(new Uint8Array(1024).fill(1));
      append(new Uint8Array(1024).fill(2));
    });
    const built = b.build();
    expect(built.externalDataBytes).toBe(2048);
    const bytes = Buffer.concat(external.chunks);
    expect([bytes[0], bytes[1023], bytes[1024], bytes[2047]]).toEqual([1, 1, 2, 2]);
    expect(() =>
      b.streamedInitializer("short", "uint8", [2048], 2048, (append) => append(new Uint8Array(1024))),
    ).toThrow(/short: 1024 bytes written, 2048 declared/);
    expect(() =>
      b.streamedInitializer("small", "uint8", [4], 4, (append) => append(Uint8Array.of(1, 2, 3))),
    ).toThrow(/small: 3 bytes written, 4 declared/);
  });

  it("stores each int64 constant once, scalars apart from vectors", () => {
    const b = new OnnxGraphBuilder("g", new InMemoryExternalData("g.weights"));
    const vector = b.int64Constant([-1, 5]);
    expect(b.int64Constant([-1, 5])).toBe(vector);
    const scalar = b.int64Constant([3], true);
    expect(b.int64Constant([3])).not.toBe(scalar);
    const initializers = decode(b.build().model).graph.initializer;
    expect(initializers.map((t) => [t.name, t.dims ?? []])).toEqual([
      ["/constants/int64_m1_5", [2]],
      ["/constants/int64_scalar_3", []],
      ["/constants/int64_3", [1]],
    ]);
    expect(new BigInt64Array(Uint8Array.from(initializers[0].rawData!).buffer)).toEqual(
      BigInt64Array.of(-1n, 5n),
    );
  });
});
