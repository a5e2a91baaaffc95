"""Retrieval pieces with no storage in them: the FAISS vector index, the FTS5 query builder, and rank fusion.

Why FAISS and not sqlite-vec: this CPython's `sqlite3` is built without `enable_load_extension`, so sqlite-vec
cannot load at all here; and on 20k random 384-d vectors FAISS exact inner product answered a query in 1.7 ms
p50 vs 2.2 ms for numpy (benchmarks/bench_rag.py). The vectors themselves live in SQLite (the source of truth,
crash-safe); the FAISS index is rebuilt from them when a base is opened, so there is no second file to keep
consistent after a kill -9.

`traced_query` is how a search reports itself through athanor/tracing.py (KnowledgeBase.query wears it): one
`retrieval` span with the base, mode, top_k and result count; the query and the hits (chunk ids, scores,
sources) are content, dropped when content capture is off.

Not for: SQL (store.py) or deciding which mode to run (kb.py).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import re
from collections.abc import Callable, Iterator

import numpy as np

from athanor import tracing

KB, MODE, TOP_K, RESULTS = "athanor.retrieval.kb", "athanor.retrieval.mode", "athanor.retrieval.top_k", \
    "athanor.retrieval.results"


@contextlib.contextmanager
def retrieval_span(kb: str, query: str, k: int, mode: str) -> Iterator[tracing.Span]:
    """The current span while one search runs; report the hits with `record_hits`."""
    with tracing.span(f"retrieval {kb}", "retrieval", **{KB: kb, MODE: mode, TOP_K: k}) as span:
        span.set_content(input=query)
        yield span


def traced_query(query: Callable) -> Callable:
    """Decorate a `query(self, text, k, mode, ...) -> [Hit]` method of a knowledge base (`self.path` names it)."""
    signature = inspect.signature(query)

    @functools.wraps(query)
    def traced(kb, *args, **kwargs):
        bound = signature.bind(kb, *args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        with retrieval_span(kb.path.name, a["text"], a["k"], a["mode"]) as span:
            hits = query(kb, *args, **kwargs)
            record_hits(span, hits)
        return hits

    return traced


def record_hits(span: tracing.Span, hits: list) -> None:
    """Result count, and (as content) each hit's chunk id, score and source, best first."""
    span.set(RESULTS, len(hits))
    span.set_content(output=[{"chunk_id": h.chunk_id, "score": round(float(h.score), 6),
                              "source": h.meta.get("source")} for h in hits])


class VectorIndex:
    """Exact cosine search (inner product of unit vectors) over chunk ids, with an optional allow-list."""

    def __init__(self, dim: int):
        import faiss

        self.dim = dim
        self._faiss = faiss
        self.index = faiss.IndexIDMap(faiss.IndexFlatIP(dim))

    def __len__(self) -> int:
        return self.index.ntotal

    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        assert vecs.shape == (len(ids), self.dim), (vecs.shape, len(ids), self.dim)
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(vecs, dtype=np.float32), np.asarray(ids, dtype=np.int64))

    def remove(self, ids: list[int]) -> None:
        if ids:
            self.index.remove_ids(np.asarray(ids, dtype=np.int64))

    def search(self, query: np.ndarray, k: int, allowed: list[int] | None = None) -> list[tuple[int, float]]:
        """[(chunk_id, cosine)] best first; `allowed` restricts the search to those ids (metadata filters)."""
        k = min(k, len(self) if allowed is None else len(allowed))
        if k <= 0:
            return []
        params = None
        if allowed is not None:
            params = self._faiss.SearchParameters(sel=self._faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64)))
        scores, ids = self.index.search(np.asarray(query, dtype=np.float32).reshape(1, -1), k, params=params)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]


def fts_query(text: str) -> str | None:
    """A safe FTS5 MATCH expression: every word quoted, OR-ed (BM25 ranks docs matching more/rarer words higher)."""
    words = re.findall(r"\w+", text.lower())
    return " OR ".join(f'"{w}"' for w in dict.fromkeys(words)) or None


def rrf_fuse(rankings: list[list[int]], k: int = 60) -> list[tuple[int, float]]:
    """Reciprocal-rank fusion: score(d) = Σ over rankings of 1 / (k + rank(d)), rank starting at 1."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, doc in enumerate(ranking, start=1):
            scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def _minmax(scored: list[tuple[int, float]]) -> dict[int, float]:
    if not scored:
        return {}
    values = [s for _, s in scored]
    lo, hi = min(values), max(values)
    return {d: (s - lo) / (hi - lo) if hi > lo else 1.0 for d, s in scored}


def weighted_fuse(vector: list[tuple[int, float]], keyword: list[tuple[int, float]],
                  alpha: float = 0.5) -> list[tuple[int, float]]:
    """alpha · minmax(vector score) + (1 − alpha) · minmax(BM25); a doc missing from a list scores 0 there."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha {alpha} must be between 0 and 1")
    v, kw = _minmax(vector), _minmax(keyword)
    scores = {d: alpha * v.get(d, 0.0) + (1 - alpha) * kw.get(d, 0.0) for d in v.keys() | kw.keys()}
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
