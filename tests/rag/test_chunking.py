"""Chunking measured in all-MiniLM-L6-v2 tokens: sizes, overlap, structure boundaries, nothing lost; parent–child."""

from __future__ import annotations

import itertools
import random

import pytest

from athanor.rag.chunking import chunk_blocks, chunk_parent_child
from athanor.rag.embed import MiniLMEmbedder
from athanor.rag.loaders import Block, parse_md


@pytest.fixture(scope="module")
def count():
    return MiniLMEmbedder().count_tokens  # the tokenizer only: no model weights load


def _text(seed: int, num_sentences: int) -> str:
    rng = random.Random(seed)
    vocab = ["alpha", "beta", "gamma", "delta", "kettle", "whistle", "photosynthesis", "unbelievably",
             "tokenization", "a", "the", "of", "zebra"]
    return " ".join(" ".join(rng.choice(vocab) for _ in range(rng.randint(3, 25))).capitalize() + "."
                    for _ in range(num_sentences))


def _doc() -> list[Block]:
    run_on = " ".join(f"zq{i}x" for i in range(300))  # one 'sentence' far over any chunk size
    md = (f"# One\n\n{_text(1, 3)}\n\n{_text(2, 40)}\n\n## Two\n\n{run_on}\n\n{_text(3, 12)}\n\n"
          f"# Three\n\nshort.\n")
    return parse_md(md.encode())


def _strip_overlap(prev: str, text: str, count, overlap: int) -> tuple[list[str], str]:
    """(words of `text` after the overlap, the overlap): the longest tail of `prev` within `overlap` tokens
    that `text` starts with."""
    prev_words, words = prev.split(), text.split()
    for n in range(min(len(prev_words), len(words)), 0, -1):
        if count(" ".join(prev_words[-n:])) <= overlap and prev_words[-n:] == words[:n]:
            return words[n:], " ".join(words[:n])
    return words, ""


@pytest.mark.parametrize("size,overlap", [(64, 16), (40, 0), (500, 50)])
def test_sizes_overlap_and_nothing_lost(count, size, overlap):
    blocks = _doc()
    chunks = chunk_blocks(blocks, count, size, overlap)
    assert len(chunks) > 1
    for c in chunks:
        assert count(c.text) == c.num_tokens <= size  # WordPiece counts add up exactly over whitespace
    by_section: dict[tuple, list] = {}
    for c in chunks:
        by_section.setdefault(tuple(c.meta["heading_path"]), []).append(c)
    for path, section in by_section.items():
        source_words = [w for b in blocks if tuple(b.meta["heading_path"]) == path for w in b.text.split()]
        got = section[0].text.split()
        for prev, cur in itertools.pairwise(section):
            new_words, repeated = _strip_overlap(prev.text, cur.text, count, overlap)
            if overlap:  # the overlap is prev's last whole words: at most `overlap` tokens, and close to it
                assert overlap - 8 <= count(repeated) <= overlap, (count(repeated), repeated)
            else:
                assert repeated == ""
            got += new_words
        assert got == source_words  # in order, nothing dropped, nothing duplicated beyond the overlap


def test_chunks_never_cross_sections_and_keep_location(count):
    chunks = chunk_blocks(_doc(), count, 500, 50)
    three = [c for c in chunks if c.meta["heading_path"] == ["Three"]]
    assert [c.text for c in three] == ["short."]
    assert three[0].meta["line"] == _doc()[-1].meta["line"]
    assert all("zq1x" not in c.text for c in chunks if c.meta["heading_path"] == ["One"])


def test_small_blocks_are_packed_together(count):
    blocks = [Block(f"Paragraph number {i}.", {"line": 2 * i + 1}) for i in range(10)]
    chunks = chunk_blocks(blocks, count, 500, 50)
    assert len(chunks) == 1 and chunks[0].meta == {"line": 1, "line_end": 19}
    assert chunks[0].text.count("Paragraph") == 10


def test_parent_child(count):
    pairs = chunk_parent_child(_doc(), count, chunk_size=48, chunk_overlap=8, parent_size=200)
    assert len(pairs) > 2
    for parent, children in pairs:
        assert count(parent.text) <= 200 and children
        assert all(count(c.text) <= 48 for c in children)
        assert all(set(c.text.split()) <= set(parent.text.split()) for c in children)
        assert all(c.meta["heading_path"] == parent.meta["heading_path"] for c in children)


@pytest.mark.parametrize("size,overlap", [(4, 0), (100, 60), (100, -1)])
def test_bad_sizes_are_user_errors(count, size, overlap):
    with pytest.raises(ValueError):
        chunk_blocks(_doc(), count, size, overlap)
    with pytest.raises(ValueError, match="parent size"):
        chunk_parent_child(_doc(), count, 100, 10, 100)
