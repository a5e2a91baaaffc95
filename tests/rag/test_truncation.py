"""No silent truncation: chunk sizes are capped to the embedder's input, and longer inputs are embedded whole
(in windows) so their tails reach vector search."""

from __future__ import annotations

import numpy as np

from athanor.rag.kb import KnowledgeBase

FILLER = " ".join(f"The {w} committee reviewed the quarterly budget of the regional office." for w in
                  ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
                   "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth",
                   "eighteenth", "nineteenth", "twentieth", "final", "last"])
TAIL = "The lighthouse keeper feeds his three parrots mango slices at dawn."


def test_limit_is_the_models_positions_minus_special_tokens(embedder):
    model = embedder._load()
    assert embedder.max_tokens == model.max_seq_length - 2 == 254
    assert embedder.count_tokens(FILLER + " " + TAIL) > 270  # the case below really is over the limit


def test_windows_cover_every_token_and_cut_at_word_starts(embedder):
    text = FILLER + " unbelievably " * 40 + TAIL
    windows = embedder.windows(text, 50)
    assert len(windows) > 5
    assert all(n <= 50 and embedder.count_tokens(piece) == n for piece, n in windows)
    assert sum(n for _, n in windows) == embedder.count_tokens(text)
    assert " ".join(p for p, _ in windows).split() == text.split()  # nothing lost, no word split in two


def test_a_long_inputs_tail_reaches_its_vector(embedder):
    long = FILLER + " " + TAIL
    ids = embedder._tokenizer.encode(long, add_special_tokens=False)
    head = long[: ids.offsets[embedder.max_tokens - 1][1]]  # what sentence-transformers alone would embed
    assert TAIL not in head
    q, full, cut = embedder.embed(["who feeds parrots mango slices", long, head])
    assert abs(float(np.linalg.norm(full)) - 1) < 1e-5
    assert float(full @ cut) < 0.999  # the tail changed the vector (truncation gives exactly the head's)
    assert float(q @ full) > float(q @ cut) + 0.03  # measured -0.050 vs -0.109: weak, see docs/rag.md


def test_chunk_size_over_the_limit_is_capped_with_a_notice_and_the_tail_is_found(tmp_path, embedder):
    kb = KnowledgeBase.create("big", chunk_size=500, chunk_overlap=20, embedder_obj=embedder)
    assert kb.config.chunk_size == 254
    assert len(kb.notices) == 1 and "capped to 254" in kb.notices[0] and "--parent-size 500" in kb.notices[0]
    (tmp_path / "report.txt").write_text(FILLER + " " + TAIL)
    kb.add([tmp_path / "report.txt"])
    rows = kb.store.chunk_rows(list(range(1, 10)))
    assert len(rows) == 2 and max(r["num_tokens"] for r in rows.values()) <= 254
    top = kb.query("who feeds parrots mango slices", k=1, mode="vector")[0]
    assert TAIL in top.text
    assert KnowledgeBase.create("dflt", embedder_obj=embedder).config.chunk_size == 254  # min(500, limit)


def test_a_base_made_before_the_cap_chunks_within_the_limit(tmp_path, embedder):
    kb = KnowledgeBase.create("old", embedder_obj=embedder)
    kb.store.set_config({"chunk_size": 400})  # what an earlier version allowed
    kb.close()
    kb = KnowledgeBase.open("old", embedder)
    (tmp_path / "r.txt").write_text(FILLER + " " + TAIL)
    kb.add([tmp_path / "r.txt"])
    assert any("exceeds" in n for n in kb.notices)
    assert all(r["num_tokens"] <= 254 for r in kb.store.chunk_rows(list(range(1, 10))).values())
