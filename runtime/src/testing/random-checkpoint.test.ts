import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { InvalidArgumentError } from "@tandem/common";
import { parseModelConfig } from "../checkpoint/config-parser.ts";
import { encodeSafetensors } from "../checkpoint/safetensors.ts";
import { Tokenizer } from "../tokenizer/tokenizer.ts";
import {
  parameterCount,
  PRESET_SPECS,
  randomCheckpointConfigJson,
  randomCheckpointTensors,
  sizedLlamaSpec,
  TINY_GQA4,
  TINY_LLAMA,
  TINY_MIXTRAL,
  writeRandomCheckpoint,
  type RandomCheckpointSpec,
} from "./random-checkpoint.ts";

const root = mkdtempSync(join(tmpdir(), "tandem-random-checkpoint-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

let counter = 0;
async function write(spec: RandomCheckpointSpec): Promise<string> {
  const dir = join(root, `c${counter++}`);
  await writeRandomCheckpoint(dir, spec);
  return dir;
}

function filesOf(dir: string): Map<string, Buffer> {
  return new Map(readdirSync(dir).map((name) => [name, readFileSync(join(dir, name))]));
}

function std(values: Float32Array): number {
  let sum = 0;
  let squares = 0;
  for (const v of values) {
    sum += v;
    squares += v * v;
  }
  const mean = sum / values.length;
  return Math.sqrt(squares / values.length - mean * mean);
}

describe("writeRandomCheckpoint", () => {
  it("writes the same bytes for the same spec, and other weights for another seed", async () => {
    const spec: RandomCheckpointSpec = { ...TINY_MIXTRAL, dtype: "BF16", shards: 2 };
    const [a, b] = [filesOf(await write(spec)), filesOf(await write(spec))];
    expect([...a.keys()].sort()).toEqual([
      "config.json",
      "model-00001-of-00002.safetensors",
      "model-00002-of-00002.safetensors",
      "model.safetensors.index.json",
      "tokenizer.json",
    ]);
    for (const [name, bytes] of a) expect(bytes.equals(b.get(name) ?? Buffer.alloc(0)), name).toBe(true);

    const other = filesOf(await write({ ...spec, seed: spec.seed + 1 }));
    expect(other.get("config.json")?.equals(a.get("config.json") ?? Buffer.alloc(0))).toBe(true);
    expect(
      other
        .get("model-00001-of-00002.safetensors")
        ?.equals(a.get("model-00001-of-00002.safetensors") ?? Buffer.alloc(0)),
    ).toBe(false);
  });

  it("writes a tensor at a time the bytes the whole-checkpoint encoding gives, shards alike", async () => {
    const spec: RandomCheckpointSpec = { ...TINY_MIXTRAL, dtype: "BF16" };
    const whole = encodeSafetensors(randomCheckpointTensors(spec), "BF16");
    expect(readFileSync(join(await write(spec), "model.safetensors")).equals(whole)).toBe(true);
    // Shards hold consecutive runs of the same tensors, drawn from the same stream.
    const sharded = await write({ ...spec, shards: 2 });
    const tensors = randomCheckpointTensors(spec);
    const half = Math.ceil(tensors.length / 2);
    expect(
      readFileSync(join(sharded, "model-00002-of-00002.safetensors")).equals(
        encodeSafetensors(tensors.slice(half), "BF16"),
      ),
    ).toBe(true);
  });

  it("writes an index that maps every tensor to the shard holding it", async () => {
    const dir = await write({ ...TINY_LLAMA, shards: 3 });
    const index = JSON.parse(readFileSync(join(dir, "model.safetensors.index.json"), "utf8")) as {
      metadata: { total_size: number };
      weight_map: Record<string, string>;
    };
    const tensors = randomCheckpointTensors(TINY_LLAMA);
    expect(Object.keys(index.weight_map).sort()).toEqual(tensors.map((t) => t.name).sort());
    expect(new Set(Object.values(index.weight_map)).size).toBe(3);
    expect(index.metadata.total_size).toBe(4 * parameterCount(TINY_LLAMA));
  });

  it("writes a config.json that the parser reads back as the spec", () => {
    for (const spec of Object.values(PRESET_SPECS)) {
      const config = parseModelConfig(randomCheckpointConfigJson(spec), "config.json");
      expect(config).toMatchObject({
        architecture: spec.architecture,
        hiddenSize: spec.hiddenSize,
        intermediateSize: spec.intermediateSize,
        numKvHeads: spec.numKvHeads,
        tieWordEmbeddings: spec.tieWordEmbeddings,
      });
      expect(config.numExperts).toBe(spec.numExperts);
    }
  });

  it("writes a tokenizer.json that fits the vocabulary and round-trips text", async () => {
    const spec = { ...TINY_LLAMA, numLayers: 1, tokenizerWords: ["the", " the", "ing"] };
    const tokenizer = await Tokenizer.fromFile(join(await write(spec), "tokenizer.json"));
    expect(tokenizer.vocabSize).toBeLessThanOrEqual(spec.vocabSize);
    for (const text of ["the thing", "Grüße aus 東京 🚀", "\n\t x"]) {
      const ids = tokenizer.encode(text);
      expect(Math.max(...ids)).toBeLessThan(spec.vocabSize);
      expect(tokenizer.decode(ids)).toBe(text);
    }
    // "the", "Ġ", "th", "ing": the merges apply, by rank, as BPE does.
    expect(tokenizer.encode("the thing")).toHaveLength(4);
  });

  it("refuses tokenizer merges that do not fit in the vocabulary", async () => {
    const spec = { ...TINY_LLAMA, vocabSize: 259, tokenizerWords: ["ab", "cd"] };
    await expect(writeRandomCheckpoint(join(root, "too-many-words"), spec)).rejects.toThrow(
      InvalidArgumentError,
    );
  });

  it("scales weights like a trained model: linear std 1/sqrt(in) × initScale, norms near 1", () => {
    const spec = { ...TINY_GQA4, initScale: 2 };
    const byName = new Map(randomCheckpointTensors(spec).map((t) => [t.name, t.data]));
    const q = byName.get("model.layers.0.self_attn.q_proj.weight") ?? new Float32Array();
    expect(std(q)).toBeCloseTo(2 / Math.sqrt(128), 2);
    const down = byName.get("model.layers.0.mlp.down_proj.weight") ?? new Float32Array();
    expect(std(down)).toBeCloseTo(2 / Math.sqrt(112), 2);
    const norm = byName.get("model.norm.weight") ?? new Float32Array();
    expect(norm.reduce((a, b) => a + b, 0) / norm.length).toBeCloseTo(1, 1);
  });

  it("rejects specs that describe no valid model, naming the field", () => {
    const bad: [Partial<RandomCheckpointSpec>, string][] = [
      [{ numKvHeads: 3 }, "numKvHeads"],
      [{ numHeads: 5, numKvHeads: 5 }, "numHeads"],
      [{ headDim: 7 }, "headDim"],
      [{ hiddenSize: 0 }, "hiddenSize"],
      [{ architecture: "mixtral", numExperts: 2, numExpertsPerToken: 3 }, "numExpertsPerToken"],
    ];
    for (const [overrides, field] of bad) {
      expect(() => randomCheckpointTensors({ ...TINY_LLAMA, ...overrides })).toThrow(InvalidArgumentError);
      try {
        randomCheckpointTensors({ ...TINY_LLAMA, ...overrides });
      } catch (error) {
        expect((error as InvalidArgumentError).field).toBe(field);
      }
    }
  });
});

describe("parameterCount and sizedLlamaSpec", () => {
  it("counts exactly the parameters written (tied embeddings once)", () => {
    for (const spec of Object.values(PRESET_SPECS)) {
      const written = randomCheckpointTensors(spec).reduce((sum, t) => sum + t.data.length, 0);
      expect(parameterCount(spec)).toBe(written);
    }
  });

  it("gives llama shapes of about 1M, 25M and 110M parameters", () => {
    for (const target of [1e6, 25e6, 110e6]) {
      const spec = sizedLlamaSpec(target);
      expect(spec.architecture).toBe("llama");
      expect(Math.abs(parameterCount(spec) - target) / target).toBeLessThan(0.1);
    }
    expect(sizedLlamaSpec(110e6)).toMatchObject({
      hiddenSize: 768,
      numLayers: 12,
      numHeads: 12,
      vocabSize: 32000,
    });
  });
});
