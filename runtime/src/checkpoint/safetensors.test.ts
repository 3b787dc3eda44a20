import {
  closeSync,
  existsSync,
  ftruncateSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  CheckpointError,
  InvalidArgumentError,
  TandemError,
  TensorMismatchError,
  UnsupportedError,
} from "@tandem/common";
import { bfloat16ToFloat32, float32ToBfloat16, float32ToHalf, halfToFloat32 } from "../numeric/float16.ts";
import {
  encodeSafetensors,
  readSafetensors,
  SafetensorsFile,
  writeSafetensors,
  writeSafetensorsStreaming,
  type LazyTensorToWrite,
  type SafetensorsDtype,
  type TensorToWrite,
} from "./safetensors.ts";

const dir = mkdtempSync(join(tmpdir(), "tandem-safetensors-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const FILE = "weights.safetensors";

/** What a value becomes after a trip through `dtype`. */
const ROUNDED: Record<SafetensorsDtype, (x: Float32Array) => Float32Array> = {
  F32: (x) => x,
  F16: (x) => halfToFloat32(float32ToHalf(x)),
  BF16: (x) => bfloat16ToFloat32(float32ToBfloat16(x)),
};

const TENSORS: TensorToWrite[] = [
  { name: "w", shape: [4, 6], data: Float32Array.from({ length: 24 }, (_, i) => (i - 12) * 0.173) },
  { name: "scalar", shape: [], data: Float32Array.of(-3.25e-3) },
  { name: "empty", shape: [0, 5], data: new Float32Array(0) },
  { name: "b", shape: [3], data: Float32Array.of(1e-8, 65504, -2.5) },
];

/** A file with the given header (object or raw text) followed by `dataBytes` zero bytes. */
function rawFile(header: unknown, dataBytes: number): Buffer {
  const json = Buffer.from(typeof header === "string" ? header : JSON.stringify(header));
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([prefix, json, Buffer.alloc(dataBytes)]);
}

function parseError(bytes: Buffer): TandemError {
  try {
    SafetensorsFile.parse(FILE, bytes);
  } catch (error) {
    if (error instanceof TandemError) return error;
    throw error;
  }
  throw new Error("expected the file to be rejected");
}

describe("safetensors round trip", () => {
  for (const dtype of ["F32", "F16", "BF16"] as const) {
    it(`writes and reads ${dtype} tensors, equal to the input rounded to ${dtype}`, async () => {
      const path = join(dir, `roundtrip-${dtype}.safetensors`);
      await writeSafetensors(path, TENSORS, dtype, { format: "pt", note: "ünïcode" });
      const file = await SafetensorsFile.open(path);
      expect([...file.entries.keys()]).toEqual(["w", "scalar", "empty", "b"]);
      expect(file.metadata).toEqual({ format: "pt", note: "ünïcode" });
      for (const tensor of TENSORS) {
        expect(file.entry(tensor.name).dtype).toBe(dtype);
        const back = file.read(tensor.name);
        expect(back.shape).toEqual(tensor.shape);
        expect(back.data).toEqual(ROUNDED[dtype](tensor.data));
      }
      expect((await readSafetensors(path)).get("b")?.data).toEqual(ROUNDED[dtype](TENSORS[3].data));
    });
  }

  it("pads the header so the data section starts 8-byte aligned, even with non-ASCII names", () => {
    const bytes = encodeSafetensors([{ name: "größe", shape: [3], data: Float32Array.of(1, 2, 3) }], "F32");
    const headerLength = Number(bytes.readBigUInt64LE(0));
    expect(headerLength % 8).toBe(0);
    expect(bytes.length).toBe(8 + headerLength + 12);
    expect(SafetensorsFile.parse(FILE, bytes).read("größe").data).toEqual(Float32Array.of(1, 2, 3));
  });

  it("gives the same bytes for the same tensors", () => {
    expect(encodeSafetensors(TENSORS, "BF16").equals(encodeSafetensors(TENSORS, "BF16"))).toBe(true);
  });

  it("reads tensors from views into larger buffers and copies them out", () => {
    const backing = Float32Array.of(9, 1, 2, 3, 9);
    const bytes = encodeSafetensors([{ name: "v", shape: [3], data: backing.subarray(1, 4) }], "F32");
    const file = SafetensorsFile.parse(FILE, bytes);
    const first = file.read("v");
    first.data[0] = 100;
    expect(file.read("v").data).toEqual(Float32Array.of(1, 2, 3));
  });

  it("refuses to write repeated names or data that does not fill the shape", () => {
    const t = TENSORS[0];
    expect(() => encodeSafetensors([t, t], "F32")).toThrow(InvalidArgumentError);
    expect(() => encodeSafetensors([{ ...t, name: "__metadata__" }], "F32")).toThrow(InvalidArgumentError);
    expect(() => encodeSafetensors([{ ...t, shape: [5, 6] }], "F16")).toThrow(
      /"w" has 24 values.*\[5, 6\] needs 30/,
    );
  });
});

describe("writing a file a tensor at a time", () => {
  /** TENSORS as lazy tensors, recording the order their values are made in. */
  const lazy = (made: string[]): LazyTensorToWrite[] =>
    TENSORS.map(({ name, shape, data }) => ({
      name,
      shape,
      values: () => {
        made.push(name);
        return data;
      },
    }));

  for (const dtype of ["F32", "BF16"] as const) {
    it(`${dtype}: writes the bytes encodeSafetensors gives, making each tensor once, in file order`, async () => {
      const path = join(dir, `streamed-${dtype}.safetensors`);
      const made: string[] = [];
      await writeSafetensorsStreaming(path, lazy(made), dtype);
      expect(made).toEqual(TENSORS.map((t) => t.name));
      expect(readFileSync(path).equals(encodeSafetensors(TENSORS, dtype))).toBe(true);
    });
  }

  it("refuses a repeated name before making any values, and values that do not fill the shape", async () => {
    const made: string[] = [];
    const [first] = lazy(made);
    await expect(
      writeSafetensorsStreaming(join(dir, "repeated.safetensors"), [first, first], "F32"),
    ).rejects.toThrow(InvalidArgumentError);
    expect(made).toEqual([]);
    const short = { name: "w", shape: [5, 6], values: () => new Float32Array(24) };
    await expect(writeSafetensorsStreaming(join(dir, "short.safetensors"), [short], "F16")).rejects.toThrow(
      /"w" has 24 values.*\[5, 6\] needs 30/,
    );
    expect(existsSync(join(dir, "repeated.safetensors"))).toBe(false);
  });
});

describe("safetensors validation", () => {
  const entry = (dtype: string, shape: number[], begin: number, end: number) => ({
    dtype,
    shape,
    data_offsets: [begin, end],
  });

  it("rejects a file too short to hold the header length", () => {
    const error = parseError(Buffer.alloc(5));
    expect(error).toBeInstanceOf(CheckpointError);
    expect(error.message).toMatch(/^weights\.safetensors: is 5 bytes, too short/);
  });

  it("rejects a header length beyond the end of the file", () => {
    const bytes = rawFile({}, 0);
    bytes.writeBigUInt64LE(1000n, 0);
    const error = parseError(bytes);
    expect(error).toBeInstanceOf(CheckpointError);
    expect(error.message).toMatch(/weights\.safetensors: header length 1000 exceeds the file size/);
    bytes.writeBigUInt64LE(2n ** 63n, 0);
    expect(parseError(bytes)).toBeInstanceOf(CheckpointError);
  });

  it("rejects a header that is not JSON, or not a JSON object", () => {
    const notJson = parseError(rawFile('{"w": {"dtype": "F32",', 0));
    expect(notJson).toBeInstanceOf(CheckpointError);
    expect(notJson.message).toMatch(/weights\.safetensors: header is not valid JSON/);
    expect(parseError(rawFile("[1, 2]", 0)).message).toMatch(
      /weights\.safetensors: header is not a JSON object/,
    );
  });

  it("rejects a truncated data section, naming the tensor that runs past the end", () => {
    const error = parseError(rawFile({ a: entry("F32", [2], 0, 8), b: entry("F32", [4], 8, 24) }, 20));
    expect(error).toBeInstanceOf(CheckpointError);
    expect(error.message).toMatch(
      /weights\.safetensors: is truncated: tensor "b" ends at data byte 24.*only 20/,
    );
  });

  it("rejects offsets that are reversed, negative or not integers", () => {
    for (const offsets of [[8, 0], [-4, 4], [0, 4.5], [0]]) {
      const error = parseError(rawFile({ w: { dtype: "F32", shape: [1], data_offsets: offsets } }, 8));
      expect(error).toBeInstanceOf(TensorMismatchError);
      expect(error.message).toMatch(/weights\.safetensors: tensor "w" has invalid data_offsets/);
    }
  });

  it("rejects overlapping tensors, naming both", () => {
    const error = parseError(rawFile({ a: entry("F32", [2], 0, 8), b: entry("F32", [2], 4, 12) }, 12));
    expect(error).toBeInstanceOf(TensorMismatchError);
    expect((error as TensorMismatchError).tensor).toBe("b");
    expect(error.message).toMatch(
      /weights\.safetensors: tensor "b" data_offsets \[4, 12\] overlap tensor "a"/,
    );
  });

  it("rejects a byte range that does not match the shape and dtype", () => {
    const error = parseError(rawFile({ w: entry("F16", [2, 3], 0, 8) }, 8));
    expect(error).toBeInstanceOf(TensorMismatchError);
    expect(error.message).toMatch(
      /weights\.safetensors: tensor "w" holds 8 bytes, but F16 \[2, 3\] needs 12/,
    );
  });

  it("rejects shapes that are not lists of non-negative integers", () => {
    for (const shape of [[-1], [2.5], "4", null]) {
      const error = parseError(rawFile({ w: { dtype: "F32", shape, data_offsets: [0, 4] } }, 4));
      expect(error).toBeInstanceOf(TensorMismatchError);
      expect(error.message).toMatch(/tensor "w" has invalid shape/);
    }
  });

  it("rejects metadata that does not map names to strings", () => {
    const error = parseError(rawFile({ __metadata__: { step: 5 } }, 0));
    expect(error).toBeInstanceOf(CheckpointError);
    expect(error.message).toMatch(/weights\.safetensors: "__metadata__" must map names to strings/);
  });

  it("rejects a dtype it does not know when parsing, naming file and tensor", () => {
    const error = parseError(rawFile({ w: entry("F4_E2M1", [2], 0, 1) }, 1));
    expect(error).toBeInstanceOf(UnsupportedError);
    expect(error.message).toMatch(/weights\.safetensors: tensor "w" has dtype F4_E2M1/);
  });

  it("parses files with integer tensors but refuses to read them as weights", () => {
    const file = SafetensorsFile.parse(
      FILE,
      rawFile({ ids: entry("I64", [2], 0, 16), w: entry("F32", [1], 16, 20) }, 20),
    );
    expect(file.read("w").data).toEqual(Float32Array.of(0));
    expect(() => file.read("ids")).toThrow(UnsupportedError);
    expect(() => file.read("ids")).toThrow(
      /weights\.safetensors: tensor "ids" has dtype I64; weights must be F32, F16, BF16/,
    );
  });

  it("names the file and tensor when asked for a tensor it does not hold", () => {
    const file = SafetensorsFile.parse(FILE, encodeSafetensors(TENSORS, "F32"));
    expect(() => file.read("nope")).toThrow(TensorMismatchError);
    expect(() => file.read("nope")).toThrow(/weights\.safetensors: tensor "nope" is not in this file/);
  });

  it("names the file it cannot open", async () => {
    const path = join(dir, "absent.safetensors");
    await expect(SafetensorsFile.open(path)).rejects.toThrow(CheckpointError);
    await expect(SafetensorsFile.open(path)).rejects.toThrow(/absent\.safetensors: cannot be read/);
  });
});

describe("a single file over 2 GiB", () => {
  it("is read tensor by tensor: a tensor stored past byte 2^31 comes back as written", async () => {
    // TinyLlama's BF16 checkpoint is one 2.2 GB file. This one is sparse: a 2.8 GB tensor of
    // zeros that takes no disk, then a small tensor beyond it.
    const path = join(dir, "big.safetensors");
    const bigCount = 700_000_000;
    const header = JSON.stringify({
      big: { dtype: "F32", shape: [bigCount], data_offsets: [0, bigCount * 4] },
      small: { dtype: "F32", shape: [4], data_offsets: [bigCount * 4, bigCount * 4 + 16] },
    });
    const padded = header + " ".repeat((8 - (header.length % 8)) % 8);
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(BigInt(padded.length));
    const dataStart = 8 + padded.length;
    const fd = openSync(path, "w");
    try {
      writeSync(fd, prefix, 0, 8, 0);
      writeSync(fd, Buffer.from(padded), 0, padded.length, 8);
      ftruncateSync(fd, dataStart + bigCount * 4 + 16);
      writeSync(
        fd,
        Buffer.from(new Float32Array([1.5, -2, 3.25, 4]).buffer),
        0,
        16,
        dataStart + bigCount * 4,
      );
    } finally {
      closeSync(fd);
    }
    const file = await SafetensorsFile.open(path);
    expect(file.size).toBeGreaterThan(2 ** 31);
    expect(Array.from(file.read("small").data)).toEqual([1.5, -2, 3.25, 4]);
  });
});

describe("reading rows of a table on their own", () => {
  const table = Float32Array.from({ length: 6 * 5 }, (_, i) => i / 3 - 4);
  for (const dtype of ["F32", "F16", "BF16"] as const) {
    it(`${dtype}: rows [begin, end) decode to the same values as the whole tensor's rows`, () => {
      const file = SafetensorsFile.parse(
        FILE,
        Buffer.from(encodeSafetensors([{ name: "t", shape: [6, 5], data: table }], dtype)),
      );
      const whole = file.read("t").data;
      expect(file.readRowsChecked("t", [6, 5], 2, 5)).toEqual(whole.slice(10, 25));
      expect(file.readRowsChecked("t", [6, 5], 0, 6)).toEqual(whole);
      expect(file.readRowsChecked("t", [6, 5], 3, 3)).toEqual(new Float32Array(0));
    });
  }

  it("names a non-finite value by its flat index, and refuses rows the table does not have", () => {
    const bad = table.slice();
    bad[17] = Number.NaN;
    const file = SafetensorsFile.parse(
      FILE,
      Buffer.from(encodeSafetensors([{ name: "t", shape: [6, 5], data: bad }], "F32")),
    );
    expect(file.readRowsChecked("t", [6, 5], 0, 3)).toHaveLength(15);
    expect(() => file.readRowsChecked("t", [6, 5], 3, 4)).toThrow(
      /"t".*non-finite value \(NaN\) at flat index 17/,
    );
    expect(() => file.readRowsChecked("t", [6, 5], 4, 7)).toThrow(TensorMismatchError);
    expect(() => file.readRowsChecked("t", [5, 6], 0, 1)).toThrow(/has shape \[6, 5\], expected \[5, 6\]/);
  });
});
