"""Builds the demo models' corpus from the Python 3.11 documentation (PSF licence).

Source: the reStructuredText sources that Debian's python3.11-doc installs under
/usr/share/doc/python3.11/html/_sources. Markup that carries no prose (section
underlines, index and directive-option lines) is dropped and inline roles
(:func:`len` -> len) are unwrapped. Documents are taken in sorted path order; about 5%
of them, chosen by a hash of the path, are held out for validation.

Usage: /usr/bin/python3 tools/train/make_corpus.py [--out .cache/corpus]
"""
import argparse
import hashlib
import os
import re

SOURCES = "/usr/share/doc/python3.11/html/_sources"
ROLE = re.compile(r":[a-zA-Z:]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")
UNDERLINE = re.compile(r"^\s*([=\-`:'\"~^_*+#<>.])\1{3,}\s*$")
DIRECTIVE_NOISE = re.compile(r"^\s*(\.\. (index|_[^:]+|only|highlight|sectionauthor|moduleauthor|versionadded|versionchanged|deprecated|toctree|seealso|module|currentmodule)::?.*|:[a-z-]+:.*)$")


def clean(text):
    lines = []
    for line in text.splitlines():
        if UNDERLINE.match(line) or DIRECTIVE_NOISE.match(line):
            continue
        lines.append(ROLE.sub(r"\1", line).rstrip())
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def held_out(path):
    return hashlib.sha256(path.encode()).digest()[0] < 13  # ~5% of 256


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=".cache/corpus")
    args = parser.parse_args()
    files = []
    for root, _, names in os.walk(SOURCES):
        files += [os.path.join(root, n) for n in names if n.endswith(".txt")]
    files.sort()
    if not files:
        raise SystemExit(f"no documentation sources under {SOURCES}: apt-get install python3.11-doc")
    os.makedirs(args.out, exist_ok=True)
    sizes = {"train": 0, "valid": 0}
    with open(os.path.join(args.out, "train.txt"), "w") as train, open(os.path.join(args.out, "valid.txt"), "w") as valid:
        for path in files:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = clean(f.read())
            rel = os.path.relpath(path, SOURCES)
            split = "valid" if held_out(rel) else "train"
            (valid if split == "valid" else train).write(text + "\n")
            sizes[split] += len(text)
    print(f"corpus: {len(files)} documents, train {sizes['train']} chars, valid {sizes['valid']} chars -> {args.out}")


if __name__ == "__main__":
    main()
