/**
 * Text ↔ token ids through a checkpoint's tokenizer.json, with the Hugging Face
 * tokenizers library for JavaScript. The incremental decoder turns a stream of ids into
 * a stream of text pieces whose concatenation equals decoding all ids at once, even when
 * one character spans several byte-level tokens.
 *
 * A user's text prompt is encoded as the model's authors intend (`encodePrompt`): with
 * the special tokens transformers' `tokenizer(text)` adds. Those come from tokenizer.json's
 * post-processor (Llama 3's TemplateProcessing puts `<|begin_of_text|>` first; Qwen2.5's
 * ByteLevel adds nothing), unless tokenizer_config.json sets `add_bos_token` or
 * `add_eos_token`: transformers' LlamaTokenizerFast then rebuilds the post-processor as
 * `[bos] $A [eos]` from them, so they win. A flag left unset keeps what the post-processor
 * does at its end of the text. Text that is not a prompt (calibration corpora, a rendered
 * chat template, which writes BOS itself) goes through plain `encode`.
 */
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import type { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { CheckpointError } from "@tandem/common";
import { readJsonObject } from "../checkpoint/json-file.ts";
import type { Checkpoint } from "../checkpoint/model-weights.ts";

/** Read beside tokenizer.json when present; it sets options such as `add_bos_token`. */
export const TOKENIZER_CONFIG_FILE = "tokenizer_config.json";

/** Ids put before and after a prompt's own, where tokenizer_config.json's flags decide them. */
interface PromptSpecials {
  before: number[];
  after: number[];
}

export interface EncodeOptions {
  /** Let the tokenizer's post-processor add BOS/EOS and the like. @default false */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Drop special tokens (BOS, EOS, pads) from the text. @default true */
  skipSpecialTokens?: boolean;
}

export class Tokenizer {
  private constructor(
    private readonly inner: HfTokenizer,
    /** One more than the largest token id, added tokens included: the embedding rows it needs. */
    readonly vocabSize: number,
    /** Undefined: the post-processor decides. */
    private readonly promptSpecials: PromptSpecials | undefined,
  ) {}

  /** The checkpoint's tokenizer.json; a checkpoint without one is a CheckpointError naming its directory. */
  static forCheckpoint(checkpoint: Pick<Checkpoint, "dir" | "tokenizerPath">): Promise<Tokenizer> {
    if (!checkpoint.tokenizerPath)
      return Promise.reject(
        new CheckpointError(checkpoint.dir, "has no tokenizer.json (text in and out needs one)"),
      );
    return Tokenizer.fromFile(checkpoint.tokenizerPath);
  }

  /** Loads tokenizer.json (and tokenizer_config.json beside it); throws CheckpointError naming the bad file. */
  static async fromFile(path: string): Promise<Tokenizer> {
    // Loaded here, not at import: a cloud worker never handles text.
    const { Tokenizer: LibraryTokenizer } = await import("@huggingface/tokenizers");
    const json = await readJsonObject(path);
    const configPath = join(dirname(path), TOKENIZER_CONFIG_FILE);
    const config = await readTokenizerConfig(dirname(path));
    let inner: HfTokenizer;
    try {
      inner = new LibraryTokenizer(json, config);
    } catch (error) {
      const reason = (error as Error).message;
      throw new CheckpointError(path, `is not a tokenizer the library can load (${reason})`, {
        cause: error,
      });
    }
    let maxId = -1;
    for (const id of inner.get_vocab(true).values()) if (id > maxId) maxId = id;
    for (const id of inner.get_added_tokens_decoder().keys()) if (id > maxId) maxId = id;
    if (maxId < 0) throw new CheckpointError(path, "has an empty vocabulary");
    return new Tokenizer(inner, maxId + 1, promptSpecialsOf(inner, config, configPath));
  }

  /** Token ids of `text`, without special tokens unless asked. */
  encode(text: string, options: EncodeOptions = {}): number[] {
    return this.inner.encode(text, { add_special_tokens: options.addSpecialTokens ?? false }).ids;
  }

  /**
   * Token ids of a user's text prompt, with the special tokens the model's authors have the
   * tokenizer add (BOS for Llama 3, nothing for Qwen2.5 or the demo models): the
   * post-processor's, or those tokenizer_config.json's `add_bos_token`/`add_eos_token` ask for.
   */
  encodePrompt(text: string): number[] {
    if (!this.promptSpecials) return this.encode(text, { addSpecialTokens: true });
    return [...this.promptSpecials.before, ...this.encode(text), ...this.promptSpecials.after];
  }

  /** Text of `ids`; ids outside the vocabulary decode to nothing (the library's behaviour). */
  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    // The library throws on an empty list rather than returning "".
    if (ids.length === 0) return "";
    return this.inner.decode([...ids], {
      skip_special_tokens: options.skipSpecialTokens ?? true,
      // Clean-up rewrites " ." to "." etc., which would make streamed pieces disagree with
      // the full text; the model's own spacing is what we want anyway.
      clean_up_tokenization_spaces: false,
    });
  }

  /** The id of a token string (e.g. "<|endoftext|>"), or undefined when it is not in the vocabulary. */
  tokenToId(token: string): number | undefined {
    return this.inner.token_to_id(token);
  }
}

/** tokenizer_config.json in `dir` ({} when there is none); a broken one is a CheckpointError naming it. */
export async function readTokenizerConfig(dir: string): Promise<Record<string, unknown>> {
  const path = join(dir, TOKENIZER_CONFIG_FILE);
  return existsSync(path) ? readJsonObject(path) : {};
}

/** A special token as tokenizer_config.json writes it: a string, or an AddedToken `{content: …}`. */
export function tokenContent(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (
    typeof value === "object" &&
    value !== null &&
    typeof (value as { content?: unknown }).content === "string"
  )
    return (value as { content: string }).content;
  return undefined;
}

/**
 * What tokenizer_config.json's `add_bos_token`/`add_eos_token` put around a prompt, or
 * undefined when it sets neither (the post-processor then decides alone). A flag left
 * unset keeps the post-processor's tokens on its side, found by encoding a probe with and
 * without them: the post-processor writes `prefix + ids + suffix` for a single text.
 */
function promptSpecialsOf(
  inner: HfTokenizer,
  config: Record<string, unknown>,
  configPath: string,
): PromptSpecials | undefined {
  const addBos = config.add_bos_token;
  const addEos = config.add_eos_token;
  if (typeof addBos !== "boolean" && typeof addEos !== "boolean") return undefined;
  const probe = "a";
  const plain = inner.encode(probe, { add_special_tokens: false }).ids;
  const wrapped = inner.encode(probe, { add_special_tokens: true }).ids;
  const start = Math.max(
    0,
    wrapped.findIndex((_: number, i: number) =>
      plain.every((id: number, j: number) => wrapped[i + j] === id),
    ),
  );
  const idOf = (key: "bos_token" | "eos_token"): number => {
    const token = tokenContent(config[key]);
    const flag = key === "bos_token" ? "add_bos_token" : "add_eos_token";
    if (token === undefined)
      throw new CheckpointError(configPath, `"${flag}" is true but "${key}" is not set`);
    const id = inner.token_to_id(token);
    if (id === undefined)
      throw new CheckpointError(configPath, `"${key}" ${JSON.stringify(token)} is not in the vocabulary`);
    return id;
  };
  return {
    before: typeof addBos === "boolean" ? (addBos ? [idOf("bos_token")] : []) : wrapped.slice(0, start),
    after:
      typeof addEos === "boolean" ? (addEos ? [idOf("eos_token")] : []) : wrapped.slice(start + plain.length),
  };
}

/**
 * Streams text for a growing list of ids, the way text-generation-inference does: it
 * decodes a short window of recent ids twice, with and without the newest ones, and emits
 * the difference once it no longer ends in U+FFFD (the sign of a character whose bytes are
 * still arriving). Decoding a window rather than all ids keeps each push O(1) in the
 * length of the generation, and because both decodes start at the same id, decoders that
 * treat the first token specially (SentencePiece's leading "▁") agree on the prefix.
 */
export class IncrementalDecoder {
  /** Ids from the start of the window; earlier ids have been emitted and no longer matter. */
  private window: number[] = [];
  /** How many ids of the window decode to text already emitted. */
  private emittedIds = 0;

  constructor(
    private readonly tokenizer: Tokenizer,
    private readonly options: DecodeOptions = {},
  ) {}

  /** Adds one id; returns the text it completes (often "", e.g. mid-character). */
  push(id: number): string {
    this.window.push(id);
    const { emitted, text } = this.decodeWindow();
    if (text.length <= emitted.length || text.endsWith("\uFFFD")) return "";
    this.window = this.window.slice(this.emittedIds);
    this.emittedIds = this.window.length;
    return text.slice(emitted.length);
  }

  /**
   * Whatever is still held back. At the end of a generation an unfinished character comes
   * out as U+FFFD, exactly as in the full decode.
   */
  flush(): string {
    const { emitted, text } = this.decodeWindow();
    this.window = [];
    this.emittedIds = 0;
    return text.length > emitted.length ? text.slice(emitted.length) : "";
  }

  private decodeWindow(): { emitted: string; text: string } {
    return {
      emitted: this.tokenizer.decode(this.window.slice(0, this.emittedIds), this.options),
      text: this.tokenizer.decode(this.window, this.options),
    };
  }
}
