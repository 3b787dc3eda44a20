/**
 * Text ↔ token ids through a checkpoint's tokenizer.json, with the Hugging Face
 * tokenizers library for JavaScript. The incremental decoder turns a stream of ids into
 * a stream of text pieces whose concatenation equals decoding all ids at once, even when
 * one character spans several byte-level tokens.
 */
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { CheckpointError } from "@tandem/common";
import type { Checkpoint } from "../checkpoint/model-weights.ts";

/** Read beside tokenizer.json when present; it sets options such as `add_bos_token`. */
export const TOKENIZER_CONFIG_FILE = "tokenizer_config.json";

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
    const config = existsSync(configPath) ? await readJsonObject(configPath) : {};
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
    return new Tokenizer(inner, maxId + 1);
  }

  /** Token ids of `text`, without special tokens unless asked. */
  encode(text: string, options: EncodeOptions = {}): number[] {
    return this.inner.encode(text, { add_special_tokens: options.addSpecialTokens ?? false }).ids;
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

async function readJsonObject(path: string): Promise<Record<string, unknown>> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, "utf8"));
  } catch (error) {
    throw new CheckpointError(path, `cannot be read as JSON (${(error as Error).message})`, { cause: error });
  }
  if (typeof json !== "object" || json === null || Array.isArray(json))
    throw new CheckpointError(path, "is not a JSON object");
  return json as Record<string, unknown>;
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
