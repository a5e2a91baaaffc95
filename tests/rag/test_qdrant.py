"""The same base over Qdrant (qdrant-client's embedded local mode): ranks like FAISS, follows updates, and
reconciles with SQLite (the source of truth) when the two disagree after a crash."""

from __future__ import annotations

import pytest

from athanor.rag.kb import KnowledgeBase
from athanor.rag.store import Store
from tests.rag.files import write_corpus


def test_qdrant_backend_matches_faiss_and_reconciles(tmp_path, embedder):
    corpus = write_corpus(tmp_path / "docs")
    faiss_kb = KnowledgeBase.create("f", embedder_obj=embedder)
    qdrant_kb = KnowledgeBase.create("q", embedder_obj=embedder, vector_backend="qdrant")
    for kb in (faiss_kb, qdrant_kb):
        kb.add([tmp_path / "docs"])
    queries = ["patch a punctured tyre", "who found a moth", "coral reefs", "water"]
    for q in queries:
        a, b = faiss_kb.query(q, k=5, mode="vector"), qdrant_kb.query(q, k=5, mode="vector")
        assert [h.chunk_id for h in a] == [h.chunk_id for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-4)
    hits = qdrant_kb.query("water", k=10, mode="vector", filters={"ext": "csv"})
    assert hits and {h.meta["ext"] for h in hits} == {"csv"}

    corpus["pdf"].unlink()
    qdrant_kb.add([tmp_path / "docs"])
    assert len(qdrant_kb.index) == qdrant_kb.store.counts()["vectors"]
    assert all(not h.source.endswith(".pdf") for h in qdrant_kb.query("punctured tyre", k=10, mode="vector"))
    qdrant_kb.close()

    # SQLite loses a document behind Qdrant's back (as if killed between the two writes): open reconciles
    store = Store(qdrant_kb.path / "kb.sqlite")
    store.delete_source(str(corpus["csv"].resolve()))
    store.close()
    again = KnowledgeBase.open("q", embedder=embedder)
    assert len(again.index) == again.store.counts()["vectors"]
    assert all(not h.source.endswith(".csv") for h in again.query("geysers", k=10, mode="vector"))
    # and Qdrant loses vectors SQLite has committed: open re-adds them
    top = again.query("who found a moth", k=1, mode="vector")[0]
    again.index.remove([top.chunk_id])
    assert len(again.index) == again.store.counts()["vectors"] - 1
    again.close()
    third = KnowledgeBase.open("q", embedder=embedder)
    assert third.query("who found a moth", k=1, mode="vector")[0].chunk_id == top.chunk_id
    assert len(third.index) == third.store.counts()["vectors"]
    third.close()


def test_unknown_backend_is_a_user_error(embedder):
    with pytest.raises(ValueError, match="vector backend"):
        KnowledgeBase.create("x", embedder_obj=embedder, vector_backend="pinecone")
