import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { CheckpointError } from "@tandem/common";
import { BOS_TOKEN_ID, byteLevelTokenizerJson, EOS_TOKEN_ID } from "../testing/byte-level-tokenizer.ts";
import { IncrementalDecoder, Tokenizer } from "./tokenizer.ts";

const dir = mkdtempSync(join(tmpdir(), "tandem-tokenizer-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let counter = 0;
async function load(json: unknown, tokenizerConfig?: unknown): Promise<Tokenizer> {
  const sub = join(dir, `t${counter++}`);
  mkdirSync(sub);
  const path = join(sub, "tokenizer.json");
  writeFileSync(path, JSON.stringify(json));
  if (tokenizerConfig !== undefined)
    writeFileSync(join(sub, "tokenizer_config.json"), JSON.stringify(tokenizerConfig));
  return Tokenizer.fromFile(path);
}

/** "東" is E6 9D B1 in UTF-8: a merge of its first two bytes gives a token that ends mid-character. */
const TOKYO_PREFIX = new TextEncoder().encode("東").subarray(0, 2);

const byteLevel = () => load(byteLevelTokenizerJson());
const byteLevelWithMerges = () =>
  load(byteLevelTokenizerJson({ words: ["the", " the", "ll", "llo", " wor", "é", TOKYO_PREFIX] }));

/**
 * A Llama/Mistral-style SentencePiece tokenizer: "▁" for spaces, a prepended "▁" that the
 * decoder strips from the first token, byte fallback for anything outside the vocabulary.
 */
function sentencePieceJson(): Record<string, unknown> {
  const specials = ["<unk>", "<s>", "</s>"];
  const vocab: Record<string, number> = {};
  specials.forEach((token, id) => (vocab[token] = id));
  for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`] = 3 + b;
  let id = 259;
  for (const ch of "▁abcdehlortw") vocab[ch] = id++;
  const merges: [string, string][] = [];
  for (const [a, b] of [
    ["▁", "t"],
    ["▁t", "h"],
    ["▁th", "e"],
    ["h", "e"],
    ["l", "l"],
    ["he", "ll"],
    ["hell", "o"],
    ["▁", "hello"],
  ]) {
    vocab[a + b] = id++;
    merges.push([a, b]);
  }
  return {
    version: "1.0",
    added_tokens: specials.map((content, i) => ({ id: i, content, normalized: false, special: true })),
    normalizer: {
      type: "Sequence",
      normalizers: [
        { type: "Prepend", prepend: "▁" },
        { type: "Replace", pattern: { String: " " }, content: "▁" },
      ],
    },
    pre_tokenizer: null,
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [],
      special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } },
    },
    decoder: {
      type: "Sequence",
      decoders: [
        { type: "Replace", pattern: { String: "▁" }, content: " " },
        { type: "ByteFallback" },
        { type: "Fuse" },
        { type: "Strip", content: " ", start: 1, stop: 0 },
      ],
    },
    model: { type: "BPE", unk_token: "<unk>", fuse_unk: true, byte_fallback: true, vocab, merges },
  };
}

const TEXTS = [
  "Hello, world!",
  "hello the world",
  "naïve café — 東京 🚀",
  "  spaces\tand\nnewlines ",
  "the the the ll llo",
  "",
];

/** Streams `ids` through an IncrementalDecoder, returning every piece (the flush last). */
function stream(tokenizer: Tokenizer, ids: number[]): string[] {
  const decoder = new IncrementalDecoder(tokenizer);
  const pieces = ids.map((id) => decoder.push(id));
  pieces.push(decoder.flush());
  return pieces;
}

describe("Tokenizer", () => {
  it("round-trips ASCII and multi-byte UTF-8 text through plain byte-level BPE, one token per byte", async () => {
    const tokenizer = await byteLevel();
    for (const text of TEXTS) {
      const ids = tokenizer.encode(text);
      expect(ids).toHaveLength(Buffer.byteLength(text));
      expect(tokenizer.decode(ids)).toBe(text);
    }
    expect(tokenizer.vocabSize).toBe(258);
  });

  it("applies merges, including one that ends in the middle of a character", async () => {
    const tokenizer = await byteLevelWithMerges();
    const text = "the hello world 東京 é";
    const ids = tokenizer.encode(text);
    expect(ids.length).toBeLessThan(Buffer.byteLength(text));
    expect(tokenizer.decode(ids)).toBe(text);
    for (const text of TEXTS) expect(tokenizer.decode(tokenizer.encode(text))).toBe(text);
    // 258 base tokens + t·h, th·e, Ġ·t, Ġt·h, Ġth·e, l·l, ll·o, Ġ·w, Ġw·o, Ġwo·r, é, 東[0:2]
    expect(tokenizer.vocabSize).toBe(270);
  });

  it("adds no special tokens unless asked, and skips them when decoding unless asked", async () => {
    const tokenizer = await load(sentencePieceJson());
    expect(tokenizer.encode("hello")[0]).not.toBe(1);
    expect(tokenizer.encode("hello", { addSpecialTokens: true })[0]).toBe(1);
    const ids = [1, ...tokenizer.encode("hello"), 2];
    expect(tokenizer.decode(ids)).toBe("hello");
    expect(tokenizer.decode(ids, { skipSpecialTokens: false })).toBe("<s> hello</s>");
    expect(tokenizer.tokenToId("</s>")).toBe(2);
    expect(tokenizer.tokenToId("no such token")).toBeUndefined();
  });

  it("round-trips SentencePiece-style text, leading space and byte fallback included", async () => {
    const tokenizer = await load(sentencePieceJson());
    for (const text of ["hello the world", "the 東京!", "a  b"]) {
      expect(tokenizer.decode(tokenizer.encode(text))).toBe(text);
    }
    expect(tokenizer.vocabSize).toBe(279);
  });

  it("reads tokenizer_config.json beside tokenizer.json", async () => {
    const tokenizer = await load(byteLevelTokenizerJson(), {
      clean_up_tokenization_spaces: false,
      model_max_length: 64,
    });
    expect(tokenizer.decode(tokenizer.encode("a ."))).toBe("a .");
  });
});

/**
 * byteLevelTokenizerJson with a post-processor: Llama 3's (ByteLevel offsets, then a
 * TemplateProcessing that puts BOS first) or Qwen2.5's (ByteLevel alone, no BOS).
 */
function withPostProcessor(kind: "llama3" | "qwen2"): Record<string, unknown> {
  const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: true };
  const bosFirst = {
    type: "TemplateProcessing",
    single: [{ SpecialToken: { id: "<|bos|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
    pair: [
      { SpecialToken: { id: "<|bos|>", type_id: 0 } },
      { Sequence: { id: "A", type_id: 0 } },
      { SpecialToken: { id: "<|bos|>", type_id: 1 } },
      { Sequence: { id: "B", type_id: 1 } },
    ],
    special_tokens: { "<|bos|>": { id: "<|bos|>", ids: [BOS_TOKEN_ID], tokens: ["<|bos|>"] } },
  };
  return {
    ...byteLevelTokenizerJson(),
    post_processor: kind === "llama3" ? { type: "Sequence", processors: [byteLevel, bosFirst] } : byteLevel,
  };
}

describe("Tokenizer.encodePrompt: special tokens as the model's authors intend", () => {
  const text = "Hello, world";

  it("adds BOS where tokenizer.json's post-processor does (Llama 3's TemplateProcessing)", async () => {
    const tokenizer = await load(withPostProcessor("llama3"));
    expect(tokenizer.encodePrompt(text)).toEqual([BOS_TOKEN_ID, ...tokenizer.encode(text)]);
  });

  it("adds nothing where the post-processor adds nothing (Qwen2.5's ByteLevel)", async () => {
    const tokenizer = await load(withPostProcessor("qwen2"), { add_bos_token: false, bos_token: null });
    expect(tokenizer.encodePrompt(text)).toEqual(tokenizer.encode(text));
  });

  it("lets tokenizer_config.json's add_bos_token: false take BOS away", async () => {
    const tokenizer = await load(withPostProcessor("llama3"), { add_bos_token: false, bos_token: "<|bos|>" });
    expect(tokenizer.encodePrompt(text)).toEqual(tokenizer.encode(text));
  });

  it("lets add_bos_token / add_eos_token add tokens the post-processor does not, AddedToken objects included", async () => {
    const tokenizer = await load(withPostProcessor("qwen2"), {
      add_bos_token: true,
      add_eos_token: true,
      bos_token: { content: "<|bos|>", __type: "AddedToken" },
      eos_token: "<|endoftext|>",
    });
    expect(tokenizer.encodePrompt(text)).toEqual([BOS_TOKEN_ID, ...tokenizer.encode(text), EOS_TOKEN_ID]);
  });

  it("keeps the post-processor's tokens on the side whose flag tokenizer_config.json leaves unset", async () => {
    const tokenizer = await load(withPostProcessor("llama3"), {
      add_eos_token: true,
      eos_token: "<|endoftext|>",
    });
    expect(tokenizer.encodePrompt(text)).toEqual([BOS_TOKEN_ID, ...tokenizer.encode(text), EOS_TOKEN_ID]);
  });

  it("refuses add_bos_token without a bos_token it knows, naming tokenizer_config.json", async () => {
    await expect(load(withPostProcessor("qwen2"), { add_bos_token: true })).rejects.toThrow(
      /tokenizer_config\.json: "add_bos_token" is true but "bos_token" is not set/,
    );
    await expect(load(withPostProcessor("qwen2"), { add_bos_token: true, bos_token: "<s>" })).rejects.toThrow(
      /tokenizer_config\.json: "bos_token" "<s>" is not in the vocabulary/,
    );
  });

  const models = fileURLToPath(new URL("../../../models/", import.meta.url));
  for (const name of ["tandem-demo", "tandem-demo-moe"]) {
    const path = join(models, name, "tokenizer.json");
    it.skipIf(!existsSync(path))(
      `${name} (no post-processor, no tokenizer_config.json): prompts encode exactly as before`,
      async () => {
        expect(existsSync(join(models, name, "tokenizer_config.json"))).toBe(false);
        const tokenizer = await Tokenizer.fromFile(path);
        const heldout = join(models, "tandem-demo", "heldout.txt");
        for (const prompt of [...TEXTS, "The Python", readFileSync(heldout, "utf8").slice(0, 4000)])
          expect(tokenizer.encodePrompt(prompt)).toEqual(tokenizer.encode(prompt));
      },
    );
  }
});

describe("IncrementalDecoder", () => {
  const tokenizers: [string, () => Promise<Tokenizer>][] = [
    ["byte-level", byteLevel],
    ["byte-level with merges", byteLevelWithMerges],
    ["SentencePiece-style", () => load(sentencePieceJson())],
  ];
  for (const [name, make] of tokenizers) {
    it(`${name}: the streamed pieces concatenate to the full decode, with no U+FFFD on the way`, async () => {
      const tokenizer = await make();
      for (const text of TEXTS) {
        const ids = tokenizer.encode(text);
        const pieces = stream(tokenizer, ids);
        expect(pieces.join("")).toBe(tokenizer.decode(ids));
        expect(pieces.join("")).toBe(text);
        expect(pieces.some((p) => p.includes("\uFFFD"))).toBe(false);
      }
    });
  }

  it("holds back a character until its last byte arrives", async () => {
    const tokenizer = await byteLevel();
    const ids = tokenizer.encode("a東");
    expect(ids).toHaveLength(4);
    expect(stream(tokenizer, ids)).toEqual(["a", "", "", "東", ""]);
  });

  it("holds back a merged token that ends mid-character", async () => {
    const tokenizer = await byteLevelWithMerges();
    const ids = tokenizer.encode("東");
    expect(ids).toHaveLength(2);
    expect(stream(tokenizer, ids)).toEqual(["", "東", ""]);
  });

  it("keeps the space of a SentencePiece token that starts a new piece of the stream", async () => {
    const tokenizer = await load(sentencePieceJson());
    const ids = tokenizer.encode("hello the world");
    const pieces = stream(tokenizer, ids);
    expect(pieces).toContain(" the");
    expect(pieces.join("")).toBe("hello the world");
  });

  it("gives an unfinished character at the end as U+FFFD on flush, as the full decode does", async () => {
    const tokenizer = await byteLevel();
    const ids = tokenizer.encode("ok東").slice(0, -1);
    const pieces = stream(tokenizer, ids);
    expect(pieces.join("")).toBe(tokenizer.decode(ids));
    expect(pieces.at(-1)).toBe("\uFFFD");
  });

  it("skips special tokens in the stream, like decode", async () => {
    const tokenizer = await byteLevel();
    const ids = [0, ...tokenizer.encode("hi"), 1];
    expect(stream(tokenizer, ids).join("")).toBe("hi");
  });

  const shipped = fileURLToPath(new URL("../../../models/tandem-demo-moe/tokenizer.json", import.meta.url));
  it.skipIf(!existsSync(shipped))("streams the shipped demo tokenizer's output exactly", async () => {
    const tokenizer = await Tokenizer.fromFile(shipped);
    const text =
      "The quick brown fox — jumps over the lazy dog. 東京タワー 🚀 naïve façade, 3.14159!\n\tEnd.";
    const ids = tokenizer.encode(text);
    expect(tokenizer.decode(ids)).toBe(text);
    expect(stream(tokenizer, ids).join("")).toBe(text);
  });
});

describe("Tokenizer.fromFile errors name the file", () => {
  const cases: [string, string][] = [
    ["not JSON", "{ not json"],
    ["a JSON array", "[1, 2]"],
    ["JSON without a model", JSON.stringify({ version: "1.0", decoder: null })],
    [
      "an unknown pre-tokenizer",
      JSON.stringify({ ...byteLevelTokenizerJson(), pre_tokenizer: { type: "NoSuchPreTokenizer" } }),
    ],
  ];
  for (const [name, content] of cases) {
    it(`rejects ${name} with CheckpointError`, async () => {
      const path = join(dir, `broken-${counter++}.json`);
      writeFileSync(path, content);
      const error = await Tokenizer.fromFile(path).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(CheckpointError);
      expect((error as CheckpointError).file).toBe(path);
      expect((error as Error).message.startsWith(`${path}: `)).toBe(true);
    });
  }

  it("rejects a missing file and a broken tokenizer_config.json, naming each", async () => {
    await expect(Tokenizer.fromFile(join(dir, "absent.json"))).rejects.toThrow(
      /absent\.json: cannot be read/,
    );
    const sub = join(dir, "bad-config");
    mkdirSync(sub);
    writeFileSync(join(sub, "tokenizer.json"), JSON.stringify(byteLevelTokenizerJson()));
    writeFileSync(join(sub, "tokenizer_config.json"), "{ oops");
    await expect(Tokenizer.fromFile(join(sub, "tokenizer.json"))).rejects.toThrow(
      /tokenizer_config\.json: cannot be read as JSON/,
    );
  });
});

describe("Tokenizer.forCheckpoint", () => {
  it("names the checkpoint directory when it has no tokenizer.json", async () => {
    const error = await Tokenizer.forCheckpoint({ dir: "/models/no-tokenizer" }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CheckpointError);
    expect((error as Error).message).toBe(
      "/models/no-tokenizer: has no tokenizer.json (text in and out needs one)",
    );
  });
});
