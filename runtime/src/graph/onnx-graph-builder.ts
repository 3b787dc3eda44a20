/**
 * A small writer of ONNX graphs: primitives (`node`, `initializer`, `input`, `output`)
 * that the segment builder composes into layers. Nodes are named hierarchically
 * (`/model/layers.3/attn/qkv/MatMul`) so a graph reads well in a viewer.
 *
 * Weights go to a separate external-data file rather than into the protobuf: a 110M
 * model in fp32 is 440 MB, which protobufjs would have to copy several times, and
 * ONNX Runtime reads external data straight from disk. They are appended to that file as
 * they are added, so a build holds no copy of the weights it has written.
 */
import { closeSync, openSync, writeSync } from "node:fs";
import { InternalError } from "@tandem/common";
import {
  ATTRIBUTE_TYPE,
  DATA_LOCATION,
  DATA_TYPE,
  encodeModel,
  type AttributeMessage,
  type ModelMessage,
  type NodeMessage,
  type TensorMessage,
  type ValueInfoMessage,
} from "./onnx/onnx-schema.ts";

export type ElementType = "float32" | "float16" | "int64" | "int32" | "uint8" | "int8" | "bool";

const ELEMENT_TYPE_CODE: Record<ElementType, number> = {
  float32: DATA_TYPE.FLOAT,
  float16: DATA_TYPE.FLOAT16,
  int64: DATA_TYPE.INT64,
  int32: DATA_TYPE.INT32,
  uint8: DATA_TYPE.UINT8,
  int8: DATA_TYPE.INT8,
  bool: DATA_TYPE.BOOL,
};

/** A dimension: a fixed size or a symbolic name such as "batch". */
export type Dim = number | string;

export type AttributeValue = number | string | number[] | { floats: number[] } | { float: number };

export type TensorData = Float32Array | Int32Array | Uint8Array | Int8Array | Uint16Array | BigInt64Array;

/** Tensors at least this large go to the external data file; smaller ones stay inline. */
const EXTERNAL_THRESHOLD_BYTES = 1024;
/** Alignment of tensors in the external data file, so ONNX Runtime can map them directly. */
const EXTERNAL_ALIGNMENT = 64;

export interface BuiltGraph {
  /** Serialized ModelProto. */
  model: Uint8Array;
  /** Bytes appended to the external data file. */
  externalDataBytes: number;
}

/** Bytes in the external data file: where they start and how many. */
export interface ExternalRegion {
  offset: number;
  length: number;
}

/** Where large initializers go, in the order they are added. */
export interface ExternalDataSink {
  /** The file's name as the model refers to it (relative to the model file). */
  readonly name: string;
  /** Appends bytes; the caller may reuse its buffer once this returns. */
  append(bytes: Uint8Array): void;
}

/** An external data file written as the graph is built. Close it when the build is done. */
export class ExternalDataFile implements ExternalDataSink {
  private readonly fd: number;

  /** Creates (or truncates) `path`; the model refers to it as `name`. */
  constructor(
    path: string,
    readonly name: string,
  ) {
    this.fd = openSync(path, "w");
  }

  append(bytes: Uint8Array): void {
    for (let written = 0; written < bytes.length;)
      written += writeSync(this.fd, bytes, written, bytes.length - written);
  }

  close(): void {
    closeSync(this.fd);
  }
}

/** External data kept in memory, for graphs with few or no large initializers (tests, probes). */
export class InMemoryExternalData implements ExternalDataSink {
  readonly chunks: Buffer[] = [];

  constructor(readonly name: string) {}

  append(bytes: Uint8Array): void {
    this.chunks.push(Buffer.from(bytes));
  }
}

export class OnnxGraphBuilder {
  private readonly nodes: NodeMessage[] = [];
  private readonly initializers: TensorMessage[] = [];
  private readonly inputs: ValueInfoMessage[] = [];
  private readonly outputs: ValueInfoMessage[] = [];
  private externalOffset = 0;
  private readonly usedNames = new Set<string>();
  private readonly constantCache = new Map<string, string>();

  /** @param externalData where initializers of EXTERNAL_THRESHOLD_BYTES or more are written */
  constructor(
    private readonly graphName: string,
    private readonly externalData: ExternalDataSink,
  ) {}

  input(name: string, type: ElementType, shape: Dim[]): string {
    this.inputs.push(valueInfo(name, type, shape));
    return name;
  }

  output(name: string, type: ElementType, shape: Dim[]): string {
    this.outputs.push(valueInfo(name, type, shape));
    return name;
  }

  /** Adds a weight or constant tensor and returns its name. */
  initializer(name: string, type: ElementType, dims: number[], data: TensorData): string {
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    return this.streamedInitializer(name, type, dims, bytes.length, (append) => append(bytes));
  }

  /**
   * Adds a tensor whose bytes come in parts, e.g. a table converted block by block: `write`
   * hands exactly `byteLength` bytes, in order, to the function it is given, and none is
   * kept here once it is in the external data.
   */
  streamedInitializer(
    name: string,
    type: ElementType,
    dims: number[],
    byteLength: number,
    write: (append: (bytes: Uint8Array) => void) => void,
  ): string {
    const tensor: TensorMessage = { name, dims, dataType: ELEMENT_TYPE_CODE[type] };
    if (byteLength >= EXTERNAL_THRESHOLD_BYTES) {
      this.setExternal(tensor, this.externalBytes(`initializer ${name}`, byteLength, write));
    } else {
      const raw = new Uint8Array(byteLength);
      let written = 0;
      write((bytes) => {
        if (written + bytes.length <= byteLength) raw.set(bytes, written);
        written += bytes.length;
      });
      if (written !== byteLength)
        throw new InternalError(`initializer ${name}: ${written} bytes written, ${byteLength} declared`);
      tensor.rawData = raw;
    }
    this.initializers.push(tensor);
    return name;
  }

  /**
   * Appends bytes to the external data file that no initializer holds (yet): data the
   * engine reads itself, such as the embedding table it looks rows up in. `write` hands
   * exactly `byteLength` bytes, in order; returns where they went (aligned like every
   * tensor, so an initializer may later name them: externalInitializer). `what` names the
   * bytes in an error.
   */
  externalBytes(
    what: string,
    byteLength: number,
    write: (append: (bytes: Uint8Array) => void) => void,
  ): ExternalRegion {
    const padding = (EXTERNAL_ALIGNMENT - (this.externalOffset % EXTERNAL_ALIGNMENT)) % EXTERNAL_ALIGNMENT;
    if (padding > 0) {
      this.externalData.append(new Uint8Array(padding));
      this.externalOffset += padding;
    }
    const offset = this.externalOffset;
    let written = 0;
    write((bytes) => {
      this.externalData.append(bytes);
      written += bytes.length;
    });
    this.externalOffset += written;
    if (written !== byteLength)
      throw new InternalError(`${what}: ${written} bytes written, ${byteLength} declared`);
    return { offset, length: byteLength };
  }

  /** An initializer whose bytes are already in the external data file, at `region`. */
  externalInitializer(name: string, type: ElementType, dims: number[], region: ExternalRegion): string {
    const tensor: TensorMessage = { name, dims, dataType: ELEMENT_TYPE_CODE[type] };
    this.setExternal(tensor, region);
    this.initializers.push(tensor);
    return name;
  }

  private setExternal(tensor: TensorMessage, region: ExternalRegion): void {
    tensor.dataLocation = DATA_LOCATION.EXTERNAL;
    tensor.externalData = [
      { key: "location", value: this.externalData.name },
      { key: "offset", value: String(region.offset) },
      { key: "length", value: String(region.length) },
    ];
  }

  /** An int64 constant (shapes, axes, indices), deduplicated by value. */
  int64Constant(values: number[], scalar = false): string {
    const key = `i64:${scalar ? "s" : "v"}:${values.join(",")}`;
    const existing = this.constantCache.get(key);
    if (existing) return existing;
    const name = this.uniqueName(
      `/constants/int64_${scalar ? "scalar_" : ""}${values.join("_").replace(/-/g, "m")}`,
    );
    this.initializer(name, "int64", scalar ? [] : [values.length], BigInt64Array.from(values.map(BigInt)));
    this.constantCache.set(key, name);
    return name;
  }

  floatConstant(values: number[], scalar = false): string {
    const key = `f32:${scalar ? "s" : "v"}:${values.join(",")}`;
    const existing = this.constantCache.get(key);
    if (existing) return existing;
    const name = this.uniqueName(`/constants/float_${this.constantCache.size}`);
    this.initializer(name, "float32", scalar ? [] : [values.length], Float32Array.from(values));
    this.constantCache.set(key, name);
    return name;
  }

  /**
   * Adds a node. `name` is the node's hierarchical name; outputs default to
   * `${name}/output_${i}`. Use "" in `inputs` for an omitted optional input.
   */
  node(
    opType: string,
    name: string,
    inputs: string[],
    options: {
      outputs?: string[] | number;
      attributes?: Record<string, AttributeValue>;
      domain?: string;
    } = {},
  ): string[] {
    const nodeName = this.uniqueName(name);
    const outputs =
      typeof options.outputs === "number" || options.outputs === undefined
        ? Array.from(
            { length: (options.outputs as number | undefined) ?? 1 },
            (_, i) => `${nodeName}/output_${i}`,
          )
        : options.outputs;
    this.nodes.push({
      name: nodeName,
      opType,
      domain: options.domain ?? "",
      input: inputs,
      output: outputs,
      attribute: Object.entries(options.attributes ?? {}).map(([key, value]) => attribute(key, value)),
    });
    return outputs;
  }

  /** Single-output convenience over `node`. */
  op(
    opType: string,
    name: string,
    inputs: string[],
    attributes?: Record<string, AttributeValue>,
    domain?: string,
  ): string {
    return this.node(opType, name, inputs, { attributes, domain })[0];
  }

  build(): BuiltGraph {
    const model: ModelMessage = {
      irVersion: 8,
      producerName: "tandem",
      opsetImport: [
        { domain: "", version: 17 },
        { domain: "com.microsoft", version: 1 },
      ],
      graph: {
        name: this.graphName,
        node: this.nodes,
        initializer: this.initializers,
        input: this.inputs,
        output: this.outputs,
      },
    };
    return {
      model: encodeModel(model),
      externalDataBytes: this.externalOffset,
    };
  }

  private uniqueName(name: string): string {
    let candidate = name;
    for (let i = 1; this.usedNames.has(candidate); i++) candidate = `${name}_${i}`;
    this.usedNames.add(candidate);
    return candidate;
  }
}

function valueInfo(name: string, type: ElementType, shape: Dim[]): ValueInfoMessage {
  return {
    name,
    type: {
      tensorType: {
        elemType: ELEMENT_TYPE_CODE[type],
        shape: { dim: shape.map((d) => (typeof d === "number" ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

function attribute(name: string, value: AttributeValue): AttributeMessage {
  const types = ATTRIBUTE_TYPE;
  if (typeof value === "number") {
    if (!Number.isInteger(value)) return { name, type: types.FLOAT, f: value };
    return { name, type: types.INT, i: value };
  }
  if (typeof value === "string") return { name, type: types.STRING, s: new TextEncoder().encode(value) };
  if (Array.isArray(value)) return { name, type: types.INTS, ints: value };
  if ("float" in value) return { name, type: types.FLOAT, f: value.float };
  return { name, type: types.FLOATS, floats: value.floats };
}
