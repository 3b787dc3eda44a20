"""Checks that a shipped tokenizer.json loads in the npm package @huggingface/tokenizers (what
the TypeScript runtime uses), encodes exactly as tools/train/bpe.py does, and round-trips.

    /usr/bin/python3 tools/train/check_tokenizer.py models/tandem-demo/tokenizer.json [text files...]

Without text files it checks the whole validation split, the first 2 MB of the training split
(.cache/corpus/) and a set of awkward strings (non-ASCII letters, digits of other scripts,
emoji, combining marks, runs of spaces and tabs). Needs node and the repository's node_modules.
"""
import json
import os
import subprocess
import sys
import tempfile
import unicodedata

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bpe  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
AWKWARD = [
    "The quick brown fox — jumps over the lazy dog. 東京タワー 🚀 naïve façade, 3.14159!\n\tEnd.",
    "x²+y³ = ½ · Ⅻ ٣٤ ①②  \u0301e\u0301 don't we'll I'd it's 'quoted' _under_score__ __init__",
    "    indented\n\n\n   \t\t  trailing   \n" + "a" * 300 + " " + "😀" * 5,
    "def f(x):\n    return {'a': [1, 2, 3]}  # comment\r\n<|endoftext|> after",
    "Ǆemo ǅ ǆ ＡＢＣ １２３ ‐‑‒–— …",
]

NODE = r"""
const fs = require("fs");
import("@huggingface/tokenizers").then(({ Tokenizer }) => {
  const [tokPath, textsPath] = process.argv.slice(1);
  const tok = new Tokenizer(JSON.parse(fs.readFileSync(tokPath, "utf8")), {});
  const texts = JSON.parse(fs.readFileSync(textsPath, "utf8"));
  const out = texts.map((t) => {
    const ids = tok.encode(t, { add_special_tokens: false }).ids;
    const back = ids.length ? tok.decode(ids, { skip_special_tokens: false, clean_up_tokenization_spaces: false }) : "";
    return { ids, roundtrip: back === t };
  });
  // Pre-tokenization alone on a probe with every code point next to letters, digits,
  // punctuation and spaces: shows any difference between Python's classes and \\p{L}/\\p{N}/\\s.
  const probe = fs.readFileSync(textsPath + ".probe", "utf8");
  process.stdout.write(JSON.stringify({ out, probe: tok.pre_tokenizer.pre_tokenize(probe) }));
});
"""


def main():
    tokenizer_path = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "models/tandem-demo/tokenizer.json"))
    model = json.load(open(tokenizer_path, encoding="utf-8"))["model"]
    encoder = bpe.Encoder(model["vocab"], [tuple(m.split(" ")) for m in model["merges"]])
    files = sys.argv[2:] or [os.path.join(ROOT, ".cache/corpus/valid.txt"), os.path.join(ROOT, ".cache/corpus/train.txt")]
    texts = list(AWKWARD)
    for path in files:
        # In pieces of about 64 KB cut at blank lines, so one mismatch is easy to locate.
        text = open(path, encoding="utf-8").read()[:2_000_000]
        piece = []
        for para in text.split("\n\n"):
            piece.append(para)
            if sum(map(len, piece)) > 65536:
                texts.append("\n\n".join(piece))
                piece = []
        if piece:
            texts.append("\n\n".join(piece))
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as f:
        json.dump(texts, f, ensure_ascii=False)
    # Code points unassigned in Python's Unicode database (14.0 for 3.11) are left out: Node's
    # ICU may know them as letters or numbers (e.g. U+088F, Unicode 17); the corpus has none.
    assigned = [chr(cp) for cp in range(0x110000) if unicodedata.category(chr(cp)) not in ("Cn", "Cs")]
    probe = "".join(f"a{ch}a1{ch}1.{ch}. {ch} \t{ch}\n" for ch in assigned)
    with open(f.name + ".probe", "w", encoding="utf-8") as p:
        p.write(probe)
    result = subprocess.run(["node", "-e", NODE, tokenizer_path, f.name], cwd=ROOT, capture_output=True, text=True, check=True)
    os.unlink(f.name)
    os.unlink(f.name + ".probe")
    answer = json.loads(result.stdout)
    js, js_probe = answer["out"], answer["probe"]
    py_probe = bpe.pretokenize(probe)
    if py_probe != js_probe:
        first = next((j for j, (a, b) in enumerate(zip(py_probe, js_probe)) if a != b), min(len(py_probe), len(js_probe)))
        print(f"pre-tokenization of the all-code-points probe differs at piece {first}: python {py_probe[first:first + 4]} js {js_probe[first:first + 4]}")
    else:
        print(f"pre-tokenization identical on a probe of all {len(assigned):,} code points assigned in Unicode {unicodedata.unidata_version} ({len(py_probe):,} pieces)")
    mismatches, tokens, chars = 0, 0, 0
    for i, (text, r) in enumerate(zip(texts, js)):
        # "<|endoftext|>" inside text is an added token for the library; the Python encoder
        # (used only on plain corpus text) splits it, so compare the pieces around it.
        py = []
        for k, part in enumerate(text.split(bpe.END_OF_TEXT)):
            if k:
                py.append(model["vocab"][bpe.END_OF_TEXT])
            py.extend(encoder.encode(part))
        tokens += len(py)
        chars += len(text)
        if py != r["ids"] or not r["roundtrip"]:
            mismatches += 1
            first = next((j for j, (a, b) in enumerate(zip(py, r["ids"])) if a != b), min(len(py), len(r["ids"])))
            print(f"MISMATCH text {i}: python {len(py)} ids, js {len(r['ids'])} ids, first difference at {first}, roundtrip {r['roundtrip']}")
            inverse = {v: k for k, v in model["vocab"].items()}
            print("   python:", [inverse[t] for t in py[max(0, first - 3):first + 3]])
            print("   js:    ", [inverse.get(t, t) for t in r["ids"][max(0, first - 3):first + 3]])
    print(f"{len(texts)} texts, {chars} characters, {tokens} tokens: {mismatches} mismatches; round-trip {'ok' if mismatches == 0 else 'see above'}")
    sys.exit(1 if mismatches or py_probe != js_probe else 0)


if __name__ == "__main__":
    main()
