"""Approximate vector search for big bases: a FAISS HNSW graph saved next to the base and kept in step with SQLite.

`HNSWIndex` has the same interface as search.VectorIndex (add / remove / search with an allow-list, len) so kb.py
picks one or the other (`KBConfig.index`: exact, hnsw, or auto = hnsw from `HNSW_MIN_CHUNKS` vectors up).

How it stays correct:
- HNSW cannot delete, so a removed chunk's graph node is a tombstone: searches skip it with a FAISS selector.
  When tombstones pass a quarter of the graph, the next `save` rebuilds the graph from the live vectors.
- Graph labels are our own counter, mapped to chunk ids (SQLite may reuse the id of a deleted last row, and a
  reused id must not find the old vector).
- Building a graph of 100k vectors takes about a minute on one core, so the graph is saved (`hnsw.npz`: graph
  and labels in one file, written to a temporary name and renamed) and on open `reconcile` adds what SQLite has
  and the file lacks, tombstones the rest, and replaces any vector that differs from SQLite's. SQLite stays the source of truth: a stale or missing file after a kill -9
  is healed, never trusted.
- A filter that leaves few chunks (≤ `EXACT_BELOW`) is searched exactly over those chunks' vectors (fetched from
  SQLite): HNSW's recall drops when most of the graph is filtered out.

Not for: the exact index (search.VectorIndex) or choosing between them (kb.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

HNSW_MIN_CHUNKS = 50_000  # `index: auto` switches from exact to HNSW here (benchmarks/RESULTS.md, RAG scale)
EXACT_BELOW = 5_000  # filtered searches over at most this many chunks run exactly
M, EF_CONSTRUCTION, EF_SEARCH = 32, 80, 128  # graph degree and beam widths (recall/latency in bench_rag.py)
FILE = "hnsw.npz"


class HNSWIndex:
    def __init__(self, dim: int, fetch: Callable[[list[int]], np.ndarray], path: Path | None = None,
                 ef_search: int = EF_SEARCH):
        import faiss

        self.dim, self.fetch, self.path, self.ef_search = dim, fetch, path, ef_search
        self._faiss = faiss
        self._new_graph()
        if path is not None and (path / FILE).exists():
            try:
                with np.load(path / FILE) as saved:
                    graph, ids = faiss.deserialize_index(saved["graph"]), saved["ids"]
                if graph.ntotal == len(ids) and graph.d == dim:
                    self.graph, self.label_ids = graph, ids
                    self.id_label = {int(i): n for n, i in enumerate(ids) if i >= 0}
                    self._dirty = False
            except (RuntimeError, ValueError, OSError, KeyError):  # unreadable: start empty, reconcile fills it
                self._new_graph()

    def _new_graph(self) -> None:
        self.graph = self._faiss.IndexHNSWFlat(self.dim, M, self._faiss.METRIC_INNER_PRODUCT)
        self.graph.hnsw.efConstruction = EF_CONSTRUCTION
        self.label_ids = np.zeros(0, dtype=np.int64)  # (num_labels,) chunk id of each graph node, -1 = tombstone
        self.id_label: dict[int, int] = {}
        self._dirty = True

    def __len__(self) -> int:
        return len(self.id_label)

    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        assert vecs.shape == (len(ids), self.dim), (vecs.shape, len(ids), self.dim)
        self.remove([int(i) for i in ids if int(i) in self.id_label])  # a re-added id replaces its old vector
        if len(ids):
            start = len(self.label_ids)
            self.graph.add(np.ascontiguousarray(vecs, dtype=np.float32))
            self.label_ids = np.concatenate([self.label_ids, np.asarray(ids, dtype=np.int64)])
            self.id_label.update({int(i): start + n for n, i in enumerate(ids)})
            self._dirty = True

    def remove(self, ids: list[int]) -> None:
        for i in ids:
            label = self.id_label.pop(int(i), None)
            if label is not None:
                self.label_ids[label] = -1
                self._dirty = True

    def reconcile(self, ids: np.ndarray, vecs: np.ndarray) -> tuple[int, int]:
        """Make the graph hold exactly these (SQLite's) vectors. Returns (added, removed)."""
        want = {int(i) for i in ids}
        extra = [i for i in self.id_label if i not in want]
        self.remove(extra)
        have = np.array([n for n, i in enumerate(ids) if int(i) in self.id_label], dtype=np.int64)
        if len(have):  # an id SQLite reused for a new chunk carries a different vector: replace it
            stored = self.graph.reconstruct_n(0, self.graph.ntotal)[[self.id_label[int(i)] for i in ids[have]]]
            self.remove([int(i) for i in ids[have][np.any(stored != vecs[have], axis=1)]])
        missing = np.array([n for n, i in enumerate(ids) if int(i) not in self.id_label], dtype=np.int64)
        if len(missing):
            self.add(ids[missing], vecs[missing])
        return len(missing), len(extra)

    def search(self, query: np.ndarray, k: int, allowed: list[int] | None = None) -> list[tuple[int, float]]:
        """[(chunk_id, cosine)] best first, approximately; small allow-lists are searched exactly."""
        if allowed is not None:
            allowed = [i for i in allowed if i in self.id_label]
            if len(allowed) <= EXACT_BELOW:
                return _exact(query, allowed, self.fetch(allowed) if allowed else None, k)
        k = min(k, len(self))
        if k <= 0:
            return []
        faiss, num_dead = self._faiss, len(self.label_ids) - len(self.id_label)
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(self.ef_search, k)
        if allowed is not None:
            sel = faiss.IDSelectorBatch(np.array([self.id_label[i] for i in allowed], dtype=np.int64))
            params.sel = sel  # `sel` must stay referenced until the search returns
        elif num_dead:
            sel = faiss.IDSelectorBatch(np.flatnonzero(self.label_ids >= 0).astype(np.int64))
            params.sel = sel
        scores, labels = self.graph.search(np.asarray(query, dtype=np.float32).reshape(1, -1), k, params=params)
        return [(int(self.label_ids[lab]), float(s)) for lab, s in zip(labels[0], scores[0])
                if lab >= 0 and self.label_ids[lab] >= 0]

    def save(self) -> None:
        """Write the graph next to the base (rebuilt first when tombstones pass a quarter of it)."""
        if self.path is None or not self._dirty:
            return
        if len(self.label_ids) and (len(self.label_ids) - len(self)) * 4 > len(self.label_ids):
            live = np.array(sorted(self.id_label), dtype=np.int64)
            self._new_graph()
            if len(live):
                self.add(live, self.fetch(live.tolist()))
        tmp = self.path / (FILE + ".tmp.npz")
        with open(tmp, "wb") as f:  # graph and labels in one file, renamed into place: never half-written
            np.savez(f, graph=self._faiss.serialize_index(self.graph), ids=self.label_ids)
        os.replace(tmp, self.path / FILE)
        self._dirty = False

    def close(self) -> None:
        self.save()


def _exact(query: np.ndarray, ids: list[int], vecs: np.ndarray | None, k: int) -> list[tuple[int, float]]:
    if not ids:
        return []
    scores = vecs @ np.asarray(query, dtype=np.float32)  # (len(ids),)
    top = np.argsort(-scores, kind="stable")[:k]
    return [(int(ids[t]), float(scores[t])) for t in top]
