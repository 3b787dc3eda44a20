/**
 * A minimal valid Hugging Face tokenizer.json: GPT-2 style byte-level BPE over the 256
 * byte symbols plus two special tokens, optionally with merges that make whole words (or
 * parts of a multi-byte character) single tokens. Any text round-trips through it, which
 * is all random test checkpoints need.
 */
import { InvalidArgumentError } from "@tandem/common";

/** Token ids of the special tokens; byte b is token `FIRST_BYTE_TOKEN + b`. */
export const BOS_TOKEN_ID = 0;
export const EOS_TOKEN_ID = 1;
export const FIRST_BYTE_TOKEN = 2;
/** Special tokens plus the 256 bytes: the smallest vocabulary this tokenizer fits in. */
export const BYTE_LEVEL_BASE_VOCAB = FIRST_BYTE_TOKEN + 256;

/** GPT-2's reversible map from bytes to printable characters. */
export function bytesToUnicode(): string[] {
  const printable: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const map: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    map[b] = printable.includes(b) ? String.fromCharCode(b) : String.fromCharCode(256 + extra++);
  }
  return map;
}

export interface ByteLevelTokenizerOptions {
  /**
   * Byte strings to make single tokens, merged left to right one byte at a time; e.g.
   * `" the"` adds " t", " th" and " the". Give a multi-byte character's first bytes
   * (as a Uint8Array) to get tokens that end mid-character. @default []
   */
  words?: readonly (string | Uint8Array)[];
}

/** Token ids: 0 = <|bos|>, 1 = <|endoftext|>, 2 + b = byte b, then one id per new merge. */
export function byteLevelTokenizerJson(options: ByteLevelTokenizerOptions = {}): Record<string, unknown> {
  const symbols = bytesToUnicode();
  const vocab: Record<string, number> = { "<|bos|>": BOS_TOKEN_ID, "<|endoftext|>": EOS_TOKEN_ID };
  symbols.forEach((symbol, byte) => (vocab[symbol] = byte + FIRST_BYTE_TOKEN));
  const merges: [string, string][] = [];
  let nextId = BYTE_LEVEL_BASE_VOCAB;
  for (const word of options.words ?? []) {
    const bytes = typeof word === "string" ? new TextEncoder().encode(word) : word;
    if (bytes.length < 2) throw new InvalidArgumentError("words", "each word needs at least two bytes");
    let left = symbols[bytes[0]];
    for (let i = 1; i < bytes.length; i++) {
      const right = symbols[bytes[i]];
      if (!Object.hasOwn(vocab, left + right)) {
        vocab[left + right] = nextId++;
        merges.push([left, right]);
      }
      left += right;
    }
  }
  const special = (id: number, content: string) => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  });
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [special(BOS_TOKEN_ID, "<|bos|>"), special(EOS_TOKEN_ID, "<|endoftext|>")],
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: null,
    decoder: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      vocab,
      merges,
    },
  };
}
