"""Builds the demo models' corpora from documentation Debian installs (no network).

Corpora (--corpus):
  python-docs  the shipped models' corpus: the Python 3.11 documentation (PSF licence),
               reStructuredText sources under /usr/share/doc/python3.11/html/_sources.
               Markup that carries no prose (section underlines, index and
               directive-option lines) is dropped and inline roles (:func:`len` -> len)
               are unwrapped. Kept exactly as it was: the shipped models reproduce from it.
  docs-v2      python-docs plus the Sphinx-built documentation of nine more projects
               (their reST sources) and Django's (its HTML, as text), each under the
               licence listed in SOURCES; two known faults of python-docs fixed (lines that
               begin with an inline role are kept; documents end with <|endoftext|>).

Documents are taken in sorted path order per source; about 5% of them, chosen by a hash
of the path, are held out for validation (python-docs' held-out documents stay held out
in docs-v2).

Usage: /usr/bin/python3 tools/train/make_corpus.py [--corpus python-docs] [--out .cache/corpus]
"""
import argparse
import hashlib
import html.parser
import os
import re

PYTHON_DOCS = "/usr/share/doc/python3.11/html/_sources"

# name, Debian package, where its text is, format, licence (from the package's copyright file)
SOURCES = [
    ("Python 3.11 documentation", "python3.11-doc", PYTHON_DOCS, "rst", "PSF-2.0"),
    ("Sphinx 5.3 documentation", "sphinx-doc", "/usr/share/doc/sphinx-doc/html/_sources", "rst", "BSD-2-Clause"),
    ("pytest 7.2 documentation", "python-pytest-doc", "/usr/share/doc/python-pytest-doc/html/_sources", "rst", "MIT"),
    ("setuptools 66 documentation", "python-setuptools-doc", "/usr/share/doc/python-setuptools-doc/html/_sources", "rst", "MIT"),
    ("Flask 2.2 documentation", "python-flask-doc", "/usr/share/doc/python-flask-doc/html/_sources", "rst", "BSD-3-Clause"),
    ("Click 8.1 documentation", "python-click-doc", "/usr/share/doc/python-click-doc/html/_sources", "rst", "BSD-3-Clause"),
    ("Jinja 3.1 documentation", "python-jinja2-doc", "/usr/share/doc/python-jinja2-doc/html/_sources", "rst", "BSD-3-Clause"),
    ("Werkzeug 2.2 documentation", "python-werkzeug-doc", "/usr/share/doc/python-werkzeug-doc/html/_sources", "rst", "BSD-3-Clause"),
    ("attrs 22.2 documentation", "python-attr-doc", "/usr/share/doc/python-attr-doc/html/_sources", "rst", "MIT"),
    ("Requests 2.28 documentation", "python-requests-doc", "/usr/share/doc/python-requests-doc/html/_sources", "rst", "Apache-2.0"),
    ("Django 3.2 documentation", "python-django-doc", "/usr/share/doc/python-django-doc/html", "html", "BSD-3-Clause"),
]
CORPORA = {
    "python-docs": {"sources": SOURCES[:1], "version": 1},
    "docs-v2": {"sources": SOURCES, "version": 2},
}
END_OF_TEXT = "<|endoftext|>"
# A document boundary in docs-v2's text files: train.py puts <|endoftext|> there.
DOCUMENT_SEPARATOR = f"\n{END_OF_TEXT}\n"

ROLE = re.compile(r":[a-zA-Z:]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")
UNDERLINE = re.compile(r"^\s*([=\-`:'\"~^_*+#<>.])\1{3,}\s*$")
DIRECTIVES = r"\.\. (index|_[^:]+|only|highlight|sectionauthor|moduleauthor|versionadded|versionchanged|deprecated|toctree|seealso|module|currentmodule)::?.*"
# python-docs drops every line that starts with ":word:", inline roles included.
DIRECTIVE_NOISE_V1 = re.compile(rf"^\s*({DIRECTIVES}|:[a-z-]+:.*)$")
# docs-v2 drops field and option lines (":synopsis: text", ":noindex:") only: a role's
# backtick right after its second colon marks prose that begins with a role.
DIRECTIVE_NOISE_V2 = re.compile(rf"^\s*({DIRECTIVES}|:[a-z-]+:(\s.*)?)$")


def clean_rst(text, version):
    noise = DIRECTIVE_NOISE_V1 if version == 1 else DIRECTIVE_NOISE_V2
    lines = []
    for line in text.splitlines():
        if UNDERLINE.match(line) or noise.match(line):
            continue
        lines.append(ROLE.sub(r"\1", line).rstrip())
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


class HtmlText(html.parser.HTMLParser):
    """The text of a Sphinx page's content (Django's theme: the div with class yui-g):
    block elements become paragraphs, code blocks keep their lines, header links (¶) go."""

    BLOCKS = {"p", "pre", "li", "h1", "h2", "h3", "h4", "h5", "h6", "dt", "dd", "tr", "div", "table", "blockquote"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.depth = 0  # div nesting inside the content div, 0 = outside
        self.skip = 0  # inside a header link or a script
        self.pre = 0
        self.parts = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if self.depth == 0:
            if tag == "div" and "yui-g" in (attrs.get("class") or "").split():
                self.depth = 1
            return
        if tag == "div":
            self.depth += 1
        if tag in ("script", "style") or (tag == "a" and "headerlink" in (attrs.get("class") or "")):
            self.skip += 1
        if tag == "pre":
            self.pre += 1
        if tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag):
        if self.depth == 0:
            return
        if tag == "div":
            self.depth -= 1
        if tag in ("script", "style") or (tag == "a" and self.skip):
            self.skip = max(0, self.skip - 1)
        if tag == "pre":
            self.pre -= 1
        if tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data):
        if self.depth and not self.skip:
            self.parts.append(data if self.pre else re.sub(r"\s+", " ", data))

    def text(self):
        text = "".join(self.parts)
        text = "\n".join(line.rstrip() for line in text.splitlines())
        return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def clean_html(text):
    parser = HtmlText()
    parser.feed(text)
    return parser.text()


def documents(source):
    """(path relative to the source, file path) of a source's documents, sorted."""
    name, package, root, kind, _ = source
    suffix = ".txt" if kind == "rst" else ".html"
    files = []
    for directory, subdirs, names in os.walk(root):
        # Django's HTML: the pages, not the highlighted module sources or the indexes.
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("_"))
        files += [os.path.join(directory, n) for n in names if n.endswith(suffix)]
    files = [f for f in sorted(files) if kind == "rst" or os.path.basename(f) not in ("genindex.html", "search.html", "py-modindex.html")]
    if not files:
        raise SystemExit(f"no {name} under {root}: apt-get install {package}")
    return [(os.path.relpath(f, root), f) for f in files]


def held_out(path):
    return hashlib.sha256(path.encode()).digest()[0] < 13  # ~5% of 256


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", default="python-docs", choices=sorted(CORPORA))
    parser.add_argument("--out", default=".cache/corpus")
    args = parser.parse_args()
    corpus = CORPORA[args.corpus]
    version = corpus["version"]
    os.makedirs(args.out, exist_ok=True)
    sizes = {"train": 0, "valid": 0}
    count = 0
    # Every source is listed before anything is written, and the splits are written under
    # temporary names: a missing package must not leave empty train.txt/valid.txt behind,
    # which ensure_corpus (train.py) would then take for a built corpus.
    listed = [(source, documents(source)) for source in corpus["sources"]]
    final = {split: os.path.join(args.out, f"{split}.txt") for split in sizes}
    partial = {split: f"{path}.partial" for split, path in final.items()}
    with open(partial["train"], "w") as train, open(partial["valid"], "w") as valid:
        for source, docs in listed:
            name, kind = source[0], source[3]
            chars = 0
            for rel, path in docs:
                with open(path, encoding="utf-8", errors="replace") as f:
                    raw = f.read()
                text = clean_rst(raw, version) if kind == "rst" else clean_html(raw)
                if not text.strip():
                    continue
                # python-docs' relative paths decide its split as before; other sources'
                # paths are prefixed with their package, so two sources' paths never meet.
                key = rel if source[2] == PYTHON_DOCS else f"{source[1]}/{rel}"
                split = "valid" if held_out(key) else "train"
                separator = "\n" if version == 1 else DOCUMENT_SEPARATOR
                (valid if split == "valid" else train).write(text + separator)
                sizes[split] += len(text)
                chars += len(text)
                count += 1
            if version > 1:
                print(f"  {name} ({source[4]}): {chars} chars")
    for split in sizes:
        os.replace(partial[split], final[split])
    print(f"corpus {args.corpus}: {count} documents, train {sizes['train']} chars, valid {sizes['valid']} chars -> {args.out}")


if __name__ == "__main__":
    main()
