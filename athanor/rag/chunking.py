"""Chunking: loader Blocks → token-sized chunks, splitting by structure (sections → paragraphs → sentences → words).

Sizes are measured in the embedder's tokens (`count_tokens`, no special tokens). Consecutive chunks of the same
section share an overlap: the next chunk starts with the last ≤ `overlap` tokens (whole words) of the previous one.
The parent–child mode chunks twice: big parent chunks (returned to the reader) and small child chunks inside each
parent (embedded and retrieved).

Not for: loading files (loaders.py) or embedding (embed.py). Token counts of whitespace-joined pieces are added
up rather than re-counted; that is exact for WordPiece (MiniLM) and an estimate for byte-level BPE tokenizers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from athanor.rag.loaders import Block

CountFn = Callable[[str], int]
_SENTENCE = re.compile(r"(?<=[.!?。！？])\s+|\n+")
_LOCATION_KEYS = ("heading_path", "page", "row", "record")  # a chunk never spans two of these


@dataclass
class Chunk:
    text: str
    meta: dict = field(default_factory=dict)  # location of the chunk's first new (non-overlap) text
    num_tokens: int = 0


@dataclass
class _Piece:
    text: str
    num_tokens: int
    meta: dict


def _sections(blocks: list[Block]) -> list[list[Block]]:
    """Consecutive blocks that share heading path, page, row and record."""
    out: list[list[Block]] = []
    key = object()
    for b in blocks:
        k = tuple(str(b.meta.get(name)) for name in _LOCATION_KEYS)
        if k != key:
            out.append([])
            key = k
        out[-1].append(b)
    return out


def _split_long_word(word: str, budget: int, count: CountFn) -> list[str]:
    if count(word) <= budget or len(word) <= 1:
        return [word]
    mid = len(word) // 2
    return _split_long_word(word[:mid], budget, count) + _split_long_word(word[mid:], budget, count)


def _split(text: str, budget: int, count: CountFn, level: int = 0) -> list[tuple[str, int]]:
    """(text, tokens) pieces of at most `budget` tokens: by paragraph, then sentence, then word windows."""
    n = count(text)
    if n <= budget:
        return [(text, n)]
    if level == 0:
        parts = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    elif level == 1:
        parts = [p for p in _SENTENCE.split(text) if p and p.strip()]
    else:
        words = [w for word in text.split() for w in _split_long_word(word, budget, count)]
        return _pack_words(words, budget, count)
    if len(parts) <= 1:
        return _split(text, budget, count, level + 1)
    return [piece for p in parts for piece in _split(p, budget, count, level + 1)]


def _pack_words(words: list[str], budget: int, count: CountFn) -> list[tuple[str, int]]:
    out, cur, cur_n = [], [], 0
    for w in words:
        n = count(w)
        if cur and cur_n + n > budget:
            out.append((" ".join(cur), cur_n))
            cur, cur_n = [], 0
        cur.append(w)
        cur_n += n
    if cur:
        out.append((" ".join(cur), cur_n))
    return out


def _tail(text: str, max_tokens: int, count: CountFn) -> tuple[str, int]:
    """The last whole words of `text` that fit in `max_tokens` tokens."""
    words, kept, n = text.split(), [], 0
    for w in reversed(words):
        c = count(w)
        if n + c > max_tokens:
            break
        kept.append(w)
        n += c
    return " ".join(reversed(kept)), n


def _pack_section(section: list[Block], size: int, overlap: int, count: CountFn) -> list[Chunk]:
    # 1. pieces small enough that a chunk can hold one plus the overlap
    budget = size - overlap
    pieces = [_Piece(t, n, b.meta) for b in section for t, n in _split(b.text, budget, count)]
    # 2. greedy packing; a new chunk opens with the previous chunk's tail
    chunks: list[Chunk] = []
    cur: list[str] = []
    cur_n, cur_meta, has_new = 0, None, False
    for p in pieces:
        if has_new and cur_n + p.num_tokens > size:
            chunks.append(Chunk("\n\n".join(cur), dict(cur_meta), cur_n))
            tail, tail_n = _tail(chunks[-1].text, overlap, count) if overlap else ("", 0)
            cur, cur_n, has_new = ([tail] if tail else []), tail_n, False
        if not has_new:
            cur_meta = dict(p.meta)
        elif p.meta.get("line") is not None and p.meta["line"] != cur_meta.get("line"):
            cur_meta["line_end"] = p.meta["line"]  # a chunk of several paragraphs cites lines start–end
        cur.append(p.text)
        cur_n += p.num_tokens
        has_new = True
    if has_new:
        chunks.append(Chunk("\n\n".join(cur), dict(cur_meta), cur_n))
    return chunks


def chunk_blocks(blocks: list[Block], count: CountFn, chunk_size: int = 500, chunk_overlap: int = 50) -> list[Chunk]:
    """Token-sized chunks; a chunk never spans two sections (heading path, page, CSV row or JSON record)."""
    if chunk_size < 8:
        raise ValueError(f"chunk size {chunk_size} is too small (at least 8 tokens)")
    if not 0 <= chunk_overlap <= chunk_size // 2:
        raise ValueError(f"chunk overlap {chunk_overlap} must be between 0 and half the chunk size ({chunk_size // 2})")
    return [c for s in _sections(blocks) for c in _pack_section(s, chunk_size, chunk_overlap, count)]


def chunk_parent_child(blocks: list[Block], count: CountFn, chunk_size: int, chunk_overlap: int,
                       parent_size: int) -> list[tuple[Chunk, list[Chunk]]]:
    """(parent, children) pairs: parents of `parent_size` tokens (no overlap), children chunked inside each parent."""
    if parent_size <= chunk_size:
        raise ValueError(f"parent size {parent_size} must be larger than the chunk size {chunk_size}")
    parents = chunk_blocks(blocks, count, parent_size, 0)
    return [(p, chunk_blocks([Block(p.text, p.meta)], count, chunk_size, chunk_overlap)) for p in parents]
