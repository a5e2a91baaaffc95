"""The approximate (HNSW) vector index: agrees with exact search, deletes by tombstone, saves and reconciles with
SQLite, filters; and a knowledge base built on it answers like one on the exact index."""

from __future__ import annotations

import numpy as np
import pytest

from athanor.rag import ann
from athanor.rag.ann import HNSWIndex
from athanor.rag.kb import KnowledgeBase
from athanor.rag.search import VectorIndex
from tests.rag.files import write_corpus

DIM = 32


def _unit(rng, n):
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    ids, vecs = np.arange(100, 1100, dtype=np.int64), _unit(rng, 1000)
    store = dict(zip(ids.tolist(), vecs))
    return rng, ids, vecs, store


def _pair(ids, vecs, store, path=None):
    exact, approx = VectorIndex(DIM), HNSWIndex(DIM, lambda xs: np.stack([store[i] for i in xs]), path)
    exact.add(ids, vecs)
    approx.add(ids, vecs)
    return exact, approx


def _recall(exact, approx, queries, allowed=None):
    got = [len({i for i, _ in approx.search(q, 10, allowed)} & {i for i, _ in exact.search(q, 10, allowed)})
           for q in queries]
    return sum(got) / (10 * len(queries))


def test_agrees_with_exact_search_and_deletes(data):
    rng, ids, vecs, store = data
    exact, approx = _pair(ids, vecs, store)
    queries = _unit(rng, 20)
    assert _recall(exact, approx, queries) >= 0.95
    gone = [int(i) for i, _ in approx.search(queries[0], 5)]
    exact.remove(gone)
    approx.remove(gone)
    assert len(approx) == 995 and not {i for i, _ in approx.search(queries[0], 50)} & set(gone)
    assert _recall(exact, approx, queries) >= 0.95
    new = -queries[1]  # a reused id with a new vector is found by the new vector only
    approx.add(np.array([ids[0]]), new[None, :])
    assert approx.search(new, 1)[0][0] == ids[0] and approx.search(vecs[0], 1)[0][0] != ids[0]


def test_filters_small_exact_and_large_through_the_graph(data, monkeypatch):
    rng, ids, vecs, store = data
    exact, approx = _pair(ids, vecs, store)
    queries, small = _unit(rng, 10), ids[::50].tolist()
    for q in queries:
        a, e = approx.search(q, 5, small), exact.search(q, 5, small)
        assert [i for i, _ in a] == [i for i, _ in e] and np.allclose([s for _, s in a], [s for _, s in e], atol=1e-5)
    monkeypatch.setattr(ann, "EXACT_BELOW", 10)  # force the graph path with a selector
    half = ids[::2].tolist()
    assert _recall(exact, approx, queries, half) >= 0.9
    assert all(i in set(half) for q in queries for i, _ in approx.search(q, 10, half))


def test_save_load_and_reconcile_with_sqlite(data, tmp_path):
    rng, ids, vecs, store = data
    _, approx = _pair(ids, vecs, store, tmp_path)
    approx.save()
    assert (tmp_path / ann.FILE).exists()
    # SQLite moved on while the file was not updated: one chunk deleted, one added, one id reused
    changed = vecs.copy()
    changed[1] = _unit(rng, 1)[0]
    want_ids = np.concatenate([ids[1:], [5000]])
    want_vecs = np.concatenate([changed[1:], _unit(rng, 1)])
    store = dict(zip(want_ids.tolist(), want_vecs))
    again = HNSWIndex(DIM, lambda xs: np.stack([store[i] for i in xs]), tmp_path)
    assert len(again) == 1000  # loaded, not rebuilt
    assert again.reconcile(want_ids, want_vecs) == (2, 1)  # 5000 and the re-vectored id 101 added; 100 gone
    assert again.search(want_vecs[0], 1)[0][0] == 101 and again.search(want_vecs[-1], 1)[0][0] == 5000
    assert 100 not in {i for i, _ in again.search(vecs[0], 20)}
    (tmp_path / ann.FILE).write_bytes(b"not a faiss file")
    assert len(HNSWIndex(DIM, lambda xs: None, tmp_path)) == 0  # unreadable file: empty, reconcile refills


def test_save_rebuilds_when_tombstones_pile_up(data, tmp_path):
    rng, ids, vecs, store = data
    exact, approx = _pair(ids, vecs, store, tmp_path)
    exact.remove(ids[:400].tolist())
    approx.remove(ids[:400].tolist())
    approx.save()
    assert approx.graph.ntotal == 600 and len(approx.label_ids) == 600 and len(approx) == 600
    assert _recall(exact, approx, _unit(rng, 10)) >= 0.95


def test_knowledge_base_on_hnsw_matches_exact(tmp_path, embedder, monkeypatch):
    write_corpus(tmp_path / "docs")
    with pytest.raises(ValueError, match="unknown index"):
        KnowledgeBase.create("bad", index="lsh", embedder_obj=embedder)
    kb = KnowledgeBase.create("ann", index="hnsw", embedder_obj=embedder)
    kb.add([tmp_path / "docs"])
    assert isinstance(kb.index, HNSWIndex) and (kb.path / ann.FILE).exists()  # saved when built, not at close
    exact = VectorIndex(embedder.dim)
    exact.add(*kb.store.all_vectors(embedder.dim))
    questions = ["patch a punctured tyre", "coral reefs bleach", "who found a moth", "giraffe acacia"]
    got = [[h.chunk_id for h in kb.query(q, k=3, mode="vector")] for q in questions]
    assert got == [[i for i, _ in exact.search(embedder.embed([q])[0], 3)] for q in questions]
    kb.remove(tmp_path / "docs" / "notes.txt")
    kb.close()  # saves the graph next to the base
    assert (kb.path / ann.FILE).exists()
    again = KnowledgeBase.open("ann", embedder)
    assert isinstance(again.index, HNSWIndex) and len(again.index) == again.store.counts()["vectors"]
    assert "notes.txt" not in again.query("giraffe acacia", k=1, mode="vector")[0].source
    monkeypatch.setattr(ann, "HNSW_MIN_CHUNKS", 3)
    assert again.index_kind(3) == "hnsw" and again.index_kind(2) == "hnsw"  # explicit hnsw stays hnsw
    auto = KnowledgeBase.create("auto", embedder_obj=embedder)
    assert auto.config.index == "auto" and auto.index_kind(2) == "exact" and auto.index_kind(3) == "hnsw"
    again.close()
