"""A byte-level BPE tokenizer (GPT-2 style), trained here and written as a Hugging Face
tokenizer.json that the TypeScript side loads with @huggingface/tokenizers.

Pre-tokenization is the ByteLevel pattern of the Hugging Face libraries (GPT-2's),
    's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+
spelled for Python's `re`, which has no \\p{..}: the letter and number classes are built from
unicodedata's general categories (L*, N*) and \\s is JavaScript's whitespace set (what
@huggingface/tokenizers matches with the `u` flag). Python 3.11 knows Unicode 14; characters
assigned later may be classed differently from Node's ICU. Encoding applies merges by rank, as
the Hugging Face BPE model does, so both sides give the same ids
(tools/train/check_tokenizer.py checks it).
"""
import json
import re
import unicodedata
from collections import Counter, defaultdict


def _char_class(predicate):
    """A regex character class body matching the code points where predicate(char) holds."""
    ranges, start = [], None
    for cp in range(0x110001):
        inside = cp <= 0x10FFFF and predicate(chr(cp))
        if inside and start is None:
            start = cp
        elif not inside and start is not None:
            ranges.append((start, cp - 1))
            start = None
    return "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)


LETTER = _char_class(lambda ch: unicodedata.category(ch).startswith("L"))
NUMBER = _char_class(lambda ch: unicodedata.category(ch).startswith("N"))
SPACE = re.escape("\t\n\v\f\r \u00a0\u1680\u2028\u2029\u202f\u205f\u3000\ufeff") + "\u2000-\u200a"
PATTERN = re.compile(
    rf"""'s|'t|'re|'ve|'m|'ll|'d| ?[{LETTER}]+| ?[{NUMBER}]+| ?[^{SPACE}{LETTER}{NUMBER}]+|[{SPACE}]+(?![^{SPACE}])|[{SPACE}]+"""
)
END_OF_TEXT = "<|endoftext|>"


def bytes_to_unicode():
    printable = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


BYTE_TO_CHAR = bytes_to_unicode()


def pretokenize(text):
    return ["".join(BYTE_TO_CHAR[b] for b in piece.encode("utf-8")) for piece in PATTERN.findall(text)]


def train(text, vocab_size):
    """Returns (vocab: symbol -> id, merges: [(a, b)]) with vocab_size entries including END_OF_TEXT."""
    symbols = [BYTE_TO_CHAR[b] for b in range(256)]
    counts = Counter(pretokenize(text))
    words = [list(w) for w in counts]
    freqs = [counts[w] for w in counts]
    pair_counts = Counter()
    where = defaultdict(set)
    for i, w in enumerate(words):
        for a, b in zip(w, w[1:]):
            pair_counts[(a, b)] += freqs[i]
            where[(a, b)].add(i)
    merges = []
    while len(symbols) + len(merges) < vocab_size - 1 and pair_counts:
        best = max(pair_counts.items(), key=lambda kv: (kv[1], kv[0]))[0]
        if pair_counts[best] < 2:
            break
        merges.append(best)
        merged = best[0] + best[1]
        for i in list(where[best]):
            w = words[i]
            for a, b in zip(w, w[1:]):
                pair_counts[(a, b)] -= freqs[i]
                if pair_counts[(a, b)] <= 0:
                    del pair_counts[(a, b)]
            out, j = [], 0
            while j < len(w):
                if j + 1 < len(w) and w[j] == best[0] and w[j + 1] == best[1]:
                    out.append(merged)
                    j += 2
                else:
                    out.append(w[j])
                    j += 1
            words[i] = out
            for a, b in zip(out, out[1:]):
                pair_counts[(a, b)] += freqs[i]
                where[(a, b)].add(i)
        del where[best]
    vocab = {s: i for i, s in enumerate(symbols)}
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab[END_OF_TEXT] = len(vocab)
    return vocab, merges


class Encoder:
    def __init__(self, vocab, merges):
        self.vocab = vocab
        self.ranks = {pair: r for r, pair in enumerate(merges)}
        self.cache = {}

    def encode_word(self, word):
        cached = self.cache.get(word)
        if cached is not None:
            return cached
        parts = list(word)
        while len(parts) > 1:
            ranked = [(self.ranks.get((a, b), None), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            ranked = [(r, i) for r, i in ranked if r is not None]
            if not ranked:
                break
            pair = self._pair_of_rank(min(ranked)[0])
            out, j = [], 0
            while j < len(parts):
                if j + 1 < len(parts) and (parts[j], parts[j + 1]) == pair:
                    out.append(parts[j] + parts[j + 1])
                    j += 2
                else:
                    out.append(parts[j])
                    j += 1
            parts = out
        ids = [self.vocab[p] for p in parts]
        self.cache[word] = ids
        return ids

    def _pair_of_rank(self, rank):
        if not hasattr(self, "_by_rank"):
            self._by_rank = {r: p for p, r in self.ranks.items()}
        return self._by_rank[rank]

    def encode(self, text):
        ids = []
        for word in pretokenize(text):
            ids.extend(self.encode_word(word))
        return ids


def tokenizer_json(vocab, merges):
    eot = vocab[END_OF_TEXT]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": eot, "content": END_OF_TEXT, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}],
        "normalizer": None,
        "pre_tokenizer": byte_level,
        "post_processor": None,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
            "vocab": vocab, "merges": [f"{a} {b}" for a, b in merges],
        },
    }


def save(path, vocab, merges):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(tokenizer_json(vocab, merges), f, ensure_ascii=False)
