"""File loaders for knowledge bases: one file → a `LoadedDoc` of `Block`s that remember where they came from.

A Block is the smallest structural unit a format gives us (a paragraph under a heading, a PDF page, a CSV row,
a JSON record) with the metadata a citation needs: heading path, page, line, row or record. Chunking
(chunking.py) packs blocks into token-sized chunks; this module never counts tokens.

Not for: fetching URLs, OCR of scanned PDFs, or deciding what to skip in a folder beyond `SUFFIXES`.
Heavy parsers (pypdf, python-docx) are imported inside the function that needs them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

SUFFIXES = {".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx", ".json", ".jsonl", ".csv"}


@dataclass
class Block:
    """One structural unit of a file. `meta` holds location keys: heading_path, page, line, row, record."""

    text: str
    meta: dict = field(default_factory=dict)


@dataclass
class LoadedDoc:
    source: str  # absolute path
    content_hash: str  # sha256 of the file's bytes
    mtime: float
    blocks: list[Block]

    @property
    def meta(self) -> dict:
        return {"source": self.source, "ext": Path(self.source).suffix.lower().lstrip("."), "mtime": self.mtime}


class LoadError(ValueError):
    """A file that cannot be parsed; the caller reports and skips it."""


def load_file(path: str | Path) -> LoadedDoc:
    """Parse one file by its suffix. Raises LoadError (with a one-line reason) if it cannot be parsed."""
    path = Path(path).resolve()
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise LoadError(f"{path}: unsupported file type {suffix!r}")
    return load_bytes(str(path), path.read_bytes(), path.stat().st_mtime)


def load_bytes(source: str, data: bytes, mtime: float) -> LoadedDoc:
    """Parse content named `source` (its suffix picks the parser; unknown suffixes are read as plain text)."""
    suffix = Path(source).suffix.lower()
    try:
        blocks = _PARSERS.get(suffix, parse_txt)(data)
    except LoadError as e:
        raise LoadError(f"{source}: {e}") from e
    except Exception as e:  # every parser raises its own types; the caller only needs "skip this file, because"
        raise LoadError(f"{source}: cannot parse {suffix} ({type(e).__name__}: {e})") from e
    blocks = [b for b in blocks if b.text.strip()]
    return LoadedDoc(source, hashlib.sha256(data).hexdigest(), mtime, blocks)


def iter_files(paths: list[str | Path]) -> list[Path]:
    """Files named, plus supported files under folders named (recursive, hidden entries skipped), sorted."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += [f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUFFIXES
                    and not any(part.startswith(".") for part in f.relative_to(p).parts)]
        elif p.exists():
            out.append(p)
        else:
            raise ValueError(f"no such file or folder: {p}")
    return sorted({f.resolve() for f in out})


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise LoadError(f"not UTF-8 text ({e})") from e


# --- plain text and markdown --------------------------------------------------------------------------------


def _paragraphs(text: str, first_line: int = 1, meta: dict | None = None) -> list[Block]:
    """Blank-line separated paragraphs, each with the 1-based line it starts on."""
    blocks, buf, start = [], [], first_line
    for i, line in enumerate(text.splitlines() + [""], start=first_line):
        if line.strip():
            if not buf:
                start = i
            buf.append(line)
        elif buf:
            blocks.append(Block("\n".join(buf), {**(meta or {}), "line": start}))
            buf = []
    return blocks


def parse_txt(data: bytes) -> list[Block]:
    return _paragraphs(_decode(data))


_MD_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def parse_md(data: bytes) -> list[Block]:
    """Paragraphs under their heading path; fenced code blocks stay whole (no heading inside a fence)."""
    blocks, path, buf, start, in_fence = [], [], [], 1, False

    def flush():
        if buf:
            blocks.extend(_paragraphs("\n".join(buf), start, {"heading_path": list(path)}))
            buf.clear()

    for i, line in enumerate(_decode(data).splitlines(), start=1):
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        m = None if in_fence else _MD_HEADING.match(line)
        if m:
            flush()
            level = len(m.group(1))
            path[:] = path[: level - 1] + [""] * max(0, level - 1 - len(path)) + [m.group(2)]
            path[:] = [p for p in path if p]
            continue
        if not buf:
            start = i
        buf.append(line)
    flush()
    return blocks


# --- html ----------------------------------------------------------------------------------------------------


class _HTMLBlocks(HTMLParser):
    """Text of block elements under the current h1–h6 path; head (title), script, style and nav skipped."""

    _BLOCK = frozenset({"p", "li", "pre", "blockquote", "td", "th", "dd", "dt", "div", "section", "article", "tr", "br"})
    _SKIP = frozenset({"head", "script", "style", "noscript", "template", "nav"})

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.blocks: list[Block] = []
        self.path: list[str] = []
        self.buf: list[str] = []
        self.heading: list[str] | None = None  # collecting a heading's text
        self.level = 0
        self.skip = 0
        self.start_line = 1

    def flush(self):
        text = re.sub(r"[ \t\r\f\v]+", " ", "".join(self.buf)).strip()
        if text:
            self.blocks.append(Block(text, {"heading_path": list(self.path), "line": self.start_line}))
        self.buf = []

    def handle_starttag(self, tag, attrs):
        if tag in self._SKIP:
            self.skip += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self.flush()
            self.heading, self.level = [], int(tag[1])
        elif tag in self._BLOCK:
            self.flush()

    def handle_endtag(self, tag):
        if tag in self._SKIP:
            self.skip = max(0, self.skip - 1)
        elif re.fullmatch(r"h[1-6]", tag) and self.heading is not None:
            title = " ".join("".join(self.heading).split())
            self.path = self.path[: self.level - 1] + [title]
            self.heading = None
        elif tag in self._BLOCK:
            self.flush()

    def handle_data(self, data):
        if self.skip:
            return
        if self.heading is not None:
            self.heading.append(data)
            return
        if not self.buf:
            self.start_line = self.getpos()[0]
        self.buf.append(data)


def parse_html(data: bytes) -> list[Block]:
    parser = _HTMLBlocks()
    parser.feed(data.decode("utf-8", errors="replace"))
    parser.close()
    parser.flush()
    return parser.blocks


# --- pdf and docx --------------------------------------------------------------------------------------------


def parse_pdf(data: bytes) -> list[Block]:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    blocks = []
    for page_no, page in enumerate(reader.pages, start=1):
        text = page.extract_text() or ""
        blocks += [Block(b.text, {"page": page_no}) for b in _paragraphs(text)]
    if not blocks and reader.pages:
        raise LoadError("PDF has no extractable text (scanned? OCR is not supported)")
    return blocks


def parse_docx(data: bytes) -> list[Block]:
    """Paragraphs under the heading path built from 'Heading N' / 'Title' styles."""
    import docx

    blocks, path = [], []
    for i, para in enumerate(docx.Document(io.BytesIO(data)).paragraphs):
        style = (para.style.name or "") if para.style is not None else ""
        m = re.fullmatch(r"Heading (\d)", style)
        if m or style == "Title":
            level = int(m.group(1)) if m else 1
            path = path[: level - 1] + [para.text.strip()]
        elif para.text.strip():
            blocks.append(Block(para.text, {"heading_path": list(path), "paragraph": i + 1}))
    return blocks


# --- structured: json, jsonl, csv ----------------------------------------------------------------------------


def _record_text(obj) -> str:
    if isinstance(obj, dict):
        return "\n".join(f"{k}: {v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}" for k, v in obj.items())
    return obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)


def parse_json(data: bytes) -> list[Block]:
    obj = json.loads(_decode(data))
    records = obj if isinstance(obj, list) else [obj]
    return [Block(_record_text(r), {"record": i}) for i, r in enumerate(records)]


def parse_jsonl(data: bytes) -> list[Block]:
    blocks = []
    for line_no, line in enumerate(_decode(data).splitlines(), start=1):
        if line.strip():
            blocks.append(Block(_record_text(json.loads(line)), {"line": line_no, "record": len(blocks)}))
    return blocks


def parse_csv(data: bytes) -> list[Block]:
    """One block per row, written 'column: value' so both retrievers see the column names."""
    rows = csv.DictReader(io.StringIO(_decode(data)))
    if not rows.fieldnames:
        raise LoadError("CSV has no header row")
    return [Block("\n".join(f"{k}: {v}" for k, v in row.items() if v), {"row": i})
            for i, row in enumerate(rows, start=1)]


_PARSERS = {".txt": parse_txt, ".md": parse_md, ".markdown": parse_md, ".html": parse_html, ".htm": parse_html,
            ".pdf": parse_pdf, ".docx": parse_docx, ".json": parse_json, ".jsonl": parse_jsonl, ".csv": parse_csv}
