"""`QdrantIndex`: the vector index over Qdrant, for bases that outgrow one machine's FAISS index.

Same interface as `search.VectorIndex` (len, add, remove, search with an allow-list). A base created with
`vector_backend="qdrant"` keeps a local Qdrant store in its folder (qdrant-client's embedded mode, what the tests
use); `"qdrant:http://HOST:6333"` uses a Qdrant server instead. SQLite stays the source of truth: on open,
`reconcile` adds vectors Qdrant lacks and deletes ids SQLite no longer has, so a kill -9 between the SQLite commit
and the Qdrant write heals itself.

Not for: text, keyword search or metadata (those stay in SQLite, store.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

COLLECTION = "chunks"


class QdrantIndex:
    def __init__(self, target: str | Path, dim: int, collection: str = COLLECTION):
        from qdrant_client import QdrantClient, models

        self.models, self.dim, self.collection = models, dim, collection
        is_url = str(target).startswith(("http://", "https://"))
        self.client = QdrantClient(url=str(target)) if is_url else QdrantClient(path=str(target))
        if not self.client.collection_exists(collection):
            self.client.create_collection(collection, vectors_config=models.VectorParams(
                size=dim, distance=models.Distance.COSINE))

    def __len__(self) -> int:
        return self.client.count(self.collection, exact=True).count

    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        assert vecs.shape == (len(ids), self.dim), (vecs.shape, len(ids), self.dim)
        for i in range(0, len(ids), 1000):  # bounded request size
            self.client.upsert(self.collection, points=self.models.Batch(
                ids=[int(x) for x in ids[i: i + 1000]], vectors=np.asarray(vecs[i: i + 1000]).tolist()))

    def remove(self, ids: list[int]) -> None:
        if ids:
            self.client.delete(self.collection, points_selector=self.models.PointIdsList(points=[int(i) for i in ids]))

    def search(self, query: np.ndarray, k: int, allowed: list[int] | None = None) -> list[tuple[int, float]]:
        """[(chunk_id, cosine)] best first, restricted to `allowed` ids when given."""
        if allowed is not None and not allowed:
            return []
        flt = None
        if allowed is not None:
            flt = self.models.Filter(must=[self.models.HasIdCondition(has_id=[int(i) for i in allowed])])
        res = self.client.query_points(self.collection, query=np.asarray(query, dtype=np.float32).tolist(),
                                       limit=k, query_filter=flt)
        return [(int(p.id), float(p.score)) for p in res.points]

    def ids(self) -> set[int]:
        out, offset = set(), None
        while True:
            points, offset = self.client.scroll(self.collection, limit=10_000, offset=offset,
                                                with_payload=False, with_vectors=False)
            out.update(int(p.id) for p in points)
            if offset is None:
                return out

    def reconcile(self, ids: np.ndarray, vecs: np.ndarray) -> tuple[int, int]:
        """Make the collection hold exactly these (SQLite's) vectors. Returns (added, deleted)."""
        have, want = self.ids(), {int(i) for i in ids}
        extra = sorted(have - want)
        self.remove(extra)
        missing = np.array([i for i, x in enumerate(ids) if int(x) not in have], dtype=np.int64)
        if len(missing):
            self.add(ids[missing], vecs[missing])
        return len(missing), len(extra)

    def close(self) -> None:
        self.client.close()
