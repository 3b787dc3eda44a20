/**
 * Text ↔ token ids through a checkpoint's tokenizer.json, with the Hugging Face
 * tokenizers library for JavaScript. The incremental decoder turns a stream of ids into
 * a stream of text pieces whose concatenation equals decoding all ids at once, even when
 * one character spans several byte-level tokens.
 */
import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { existsSync } from "node:fs";
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { CheckpointError } from "../errors.ts";

export class Tokenizer {
  private constructor(
    private readonly inner: HfTokenizer,
    readonly vocabSize: number,
  ) {}

  static async fromFile(path: string): Promise<Tokenizer> {
    let json: Record<string, unknown>;
    try {
      json = JSON.parse(await readFile(path, "utf8")) as Record<string, unknown>;
    } catch (error) {
      throw new CheckpointError(path, `cannot be read as JSON (${(error as Error).message})`, {
        cause: error,
      });
    }
    const configPath = join(dirname(path), "tokenizer_config.json");
    const config = existsSync(configPath)
      ? (JSON.parse(await readFile(configPath, "utf8")) as Record<string, unknown>)
      : {};
    let inner: HfTokenizer;
    try {
      inner = new HfTokenizer(json, config);
    } catch (error) {
      throw new CheckpointError(
        path,
        `is not a tokenizer the library can load (${(error as Error).message})`,
        { cause: error },
      );
    }
    const model = json.model as { vocab?: Record<string, number> | unknown[] } | undefined;
    const added = (json.added_tokens as { id: number }[] | undefined) ?? [];
    const vocabIds = model?.vocab && !Array.isArray(model.vocab) ? Object.values(model.vocab) : [];
    const vocabSize =
      Math.max(-1, ...vocabIds, ...added.map((t) => t.id)) + 1 ||
      (Array.isArray(model?.vocab) ? model.vocab.length : 0);
    return new Tokenizer(inner, vocabSize);
  }

  /** Token ids of `text`, without special tokens unless asked. */
  encode(text: string, options: { addSpecialTokens?: boolean } = {}): number[] {
    return this.inner.encode(text, { add_special_tokens: options.addSpecialTokens ?? false }).ids;
  }

  decode(ids: number[], options: { skipSpecialTokens?: boolean } = {}): string {
    return this.inner.decode(ids, {
      skip_special_tokens: options.skipSpecialTokens ?? true,
      clean_up_tokenization_spaces: false,
    });
  }
}

/**
 * Streams text for a growing list of ids: each push decodes the ids not yet emitted as
 * text and holds back a trailing U+FFFD, the sign of a character still incomplete.
 */
export class IncrementalDecoder {
  private readonly ids: number[] = [];
  private emitted = "";

  constructor(private readonly tokenizer: Tokenizer) {}

  push(id: number): string {
    this.ids.push(id);
    const text = this.tokenizer.decode(this.ids);
    if (text.endsWith("\uFFFD")) return "";
    return this.take(text);
  }

  /** Whatever is still held back (e.g. an incomplete character at the end of generation). */
  flush(): string {
    return this.take(this.tokenizer.decode(this.ids));
  }

  private take(text: string): string {
    // Decoding is not always prefix-stable (a later token can change how earlier bytes
    // decode); emit only what extends what was already emitted.
    if (!text.startsWith(this.emitted)) return "";
    const piece = text.slice(this.emitted.length);
    this.emitted = text;
    return piece;
  }
}
