import { createHash } from "node:crypto";
import { mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { weightsHash } from "./weights-hash.ts";

const dir = mkdtempSync(join(tmpdir(), "tandem-hash-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("the weights hash", () => {
  const config = Buffer.from('{"model_type": "llama"}');
  const files = [join(dir, "a.safetensors"), join(dir, "b.safetensors")];
  writeFileSync(files[0], Buffer.from("first file"));
  writeFileSync(files[1], Buffer.from("second file"));
  const recipe = (...parts: Buffer[]) => createHash("sha256").update(Buffer.concat(parts)).digest("hex");

  it("is sha256 over config.json's bytes, then every weight file's bytes in order", async () => {
    const cache = join(dir, "cache-1");
    expect(await weightsHash(config, files, cache)).toBe(
      recipe(config, Buffer.from("first file"), Buffer.from("second file")),
    );
  });

  it("is read from the cache while the files are unchanged, and recomputed when one is rewritten", async () => {
    const cache = join(dir, "cache-2");
    const first = await weightsHash(config, files, cache);
    const [entry] = readdirSync(cache);
    // The cache is trusted while the files' identity holds: a planted value is returned.
    writeFileSync(join(cache, entry), "f".repeat(64));
    expect(await weightsHash(config, files, cache)).toBe("f".repeat(64));
    // A rewritten file (new contents, new modification time) is hashed again.
    writeFileSync(files[1], Buffer.from("changed file"));
    utimesSync(files[1], new Date(), new Date(Date.now() + 5000));
    const changed = await weightsHash(config, files, cache);
    expect(changed).toBe(recipe(config, Buffer.from("first file"), Buffer.from("changed file")));
    expect(changed).not.toBe(first);
  });

  it("works without a writable cache", async () => {
    const unwritable = join(files[0], "not-a-directory");
    expect(await weightsHash(config, files, unwritable)).toMatch(/^[0-9a-f]{64}$/);
  });
});
