import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { CheckpointError } from "../errors.ts";
import { byteLevelTokenizerJson } from "../testing/byte-level-tokenizer.ts";
import { IncrementalDecoder, Tokenizer } from "./tokenizer.ts";

const dir = mkdtempSync(join(tmpdir(), "tandem-tokenizer-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function byteLevel(): Promise<Tokenizer> {
  const path = join(dir, "tokenizer.json");
  writeFileSync(path, JSON.stringify(byteLevelTokenizerJson()));
  return Tokenizer.fromFile(path);
}

describe("Tokenizer", () => {
  it("round-trips ASCII and multi-byte UTF-8 text", async () => {
    const tokenizer = await byteLevel();
    for (const text of ["Hello, world!", "naïve café — 東京 🚀", "  spaces\tand\nnewlines "]) {
      const ids = tokenizer.encode(text);
      expect(ids.length).toBe(Buffer.byteLength(text));
      expect(tokenizer.decode(ids)).toBe(text);
    }
    expect(tokenizer.vocabSize).toBe(258);
  });

  it("streams text whose concatenation equals the full decode, holding back split characters", async () => {
    const tokenizer = await byteLevel();
    const text = "héllo 東京 🚀!";
    const ids = tokenizer.encode(text);
    const decoder = new IncrementalDecoder(tokenizer);
    const pieces = ids.map((id) => decoder.push(id));
    pieces.push(decoder.flush());
    expect(pieces.join("")).toBe(text);
    expect(pieces.some((p) => p.includes("\uFFFD"))).toBe(false);
  });

  it("names the file when tokenizer.json is not valid", async () => {
    const path = join(dir, "broken.json");
    writeFileSync(path, "{ not json");
    await expect(Tokenizer.fromFile(path)).rejects.toThrow(CheckpointError);
    await expect(Tokenizer.fromFile(path)).rejects.toThrow(/broken\.json/);
  });
});
