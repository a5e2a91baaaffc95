"""The SQLite file behind one knowledge base: `ATHANOR_HOME/kb/NAME/kb.sqlite`.

Tables: config (JSON values), documents (one row per source file, its content hash and mtime), parents (parent
sections in parent–child mode), chunks (text + location metadata as JSON), chunks_fts (FTS5, BM25, porter
stemming), vectors (float32 blobs), embed_cache (text hash → vector). A cached vector lives as long as some
chunk has its text (chunks.text_hash): replacing or removing a document drops the entries only it used, in the
same transaction, so a changed file re-embeds only its new chunks and the cache never outgrows the base;
`gc` sweeps entries left by a crash between embedding and commit.

Crash safety: WAL journal and one transaction per file (`replace_document`), so a kill -9 leaves every file either
fully in (document, chunks, FTS rows, vectors) or not at all.

Not for: embedding, chunking or ranking (kb.py and search.py).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SCHEMA = """
CREATE TABLE IF NOT EXISTS config (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY, source TEXT UNIQUE NOT NULL, content_hash TEXT NOT NULL, mtime REAL NOT NULL,
    num_chunks INTEGER NOT NULL, added_at TEXT NOT NULL DEFAULT (datetime('now')));
CREATE TABLE IF NOT EXISTS parents (
    id INTEGER PRIMARY KEY, doc_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    text TEXT NOT NULL, meta TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY, doc_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    parent_id INTEGER REFERENCES parents(id) ON DELETE CASCADE, ord INTEGER NOT NULL,
    text TEXT NOT NULL, meta TEXT NOT NULL, num_tokens INTEGER NOT NULL, text_hash TEXT);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(text, tokenize='porter unicode61');
CREATE TABLE IF NOT EXISTS vectors (
    chunk_id INTEGER PRIMARY KEY REFERENCES chunks(id) ON DELETE CASCADE, vec BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS embed_cache (text_hash TEXT PRIMARY KEY, vec BLOB NOT NULL);
"""


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class DocumentRow:
    id: int
    source: str
    content_hash: str
    mtime: float
    num_chunks: int


@dataclass
class NewChunk:
    """A chunk ready to write: text, metadata, its vector (dim,), and the index of its parent (or None)."""

    text: str
    meta: dict
    num_tokens: int
    vec: np.ndarray
    parent: int | None = None


class Store:
    def __init__(self, path: Path):
        self.path = Path(path)
        # explicit BEGIN/COMMIT below; any thread may use it, one at a time (the HTTP routes hold a lock)
        self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a process crash never loses a commit
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Bases made before chunks had text_hash: add and fill it (the embedding cache is cleaned by it)."""
        if "text_hash" not in {r[1] for r in self.db.execute("PRAGMA table_info(chunks)")}:
            with self._tx():
                self.db.execute("ALTER TABLE chunks ADD COLUMN text_hash TEXT")
                rows = self.db.execute("SELECT id, text FROM chunks").fetchall()
                self.db.executemany("UPDATE chunks SET text_hash = ? WHERE id = ?", [(text_hash(t), i) for i, t in rows])
        self.db.execute("CREATE INDEX IF NOT EXISTS chunks_hash ON chunks(text_hash)")

    def close(self) -> None:
        self.db.close()

    # --- config ------------------------------------------------------------------------------------------

    def get_config(self) -> dict:
        return {k: json.loads(v) for k, v in self.db.execute("SELECT key, value FROM config")}

    def set_config(self, config: dict) -> None:
        with self._tx():
            self.db.executemany("INSERT OR REPLACE INTO config VALUES (?, ?)",
                                [(k, json.dumps(v)) for k, v in config.items()])

    # --- documents ---------------------------------------------------------------------------------------

    def documents(self) -> list[DocumentRow]:
        rows = self.db.execute("SELECT id, source, content_hash, mtime, num_chunks FROM documents ORDER BY source")
        return [DocumentRow(*r) for r in rows]

    def replace_document(self, source: str, content_hash: str, mtime: float, parents: list[tuple[str, dict]],
                         chunks: list[NewChunk]) -> tuple[list[int], list[int]]:
        """Atomically swap a source's rows for new ones. Returns (removed chunk ids, new chunk ids)."""
        with self._tx():
            removed, old_hashes = self._delete_source(source)
            cur = self.db.execute("INSERT INTO documents(source, content_hash, mtime, num_chunks) VALUES (?, ?, ?, ?)",
                                  (source, content_hash, mtime, len(chunks)))
            doc_id = cur.lastrowid
            parent_ids = [self.db.execute("INSERT INTO parents(doc_id, text, meta) VALUES (?, ?, ?)",
                                          (doc_id, t, json.dumps(m))).lastrowid for t, m in parents]
            new_ids = []
            for ord_, c in enumerate(chunks):
                pid = parent_ids[c.parent] if c.parent is not None else None
                cid = self.db.execute(
                    "INSERT INTO chunks(doc_id, parent_id, ord, text, meta, num_tokens, text_hash) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (doc_id, pid, ord_, c.text, json.dumps(c.meta), c.num_tokens, text_hash(c.text))).lastrowid
                self.db.execute("INSERT INTO chunks_fts(rowid, text) VALUES (?, ?)", (cid, c.text))
                self.db.execute("INSERT INTO vectors VALUES (?, ?)", (cid, _blob(c.vec)))
                new_ids.append(cid)
            self._drop_unreferenced(old_hashes)
        return removed, new_ids

    def delete_source(self, source: str) -> list[int]:
        with self._tx():
            ids, old_hashes = self._delete_source(source)
            self._drop_unreferenced(old_hashes)
            return ids

    def _delete_source(self, source: str) -> tuple[list[int], set[str]]:
        """Delete a source's rows; returns (its chunk ids, their text hashes)."""
        rows = self.db.execute("SELECT c.id, c.text_hash FROM chunks c JOIN documents d ON d.id = c.doc_id "
                               "WHERE d.source = ?", (source,)).fetchall()
        self.db.executemany("DELETE FROM chunks_fts WHERE rowid = ?", [(i,) for i, _ in rows])
        self.db.execute("DELETE FROM documents WHERE source = ?", (source,))  # cascades to chunks, parents, vectors
        return [i for i, _ in rows], {h for _, h in rows if h}

    def _drop_unreferenced(self, hashes: set[str]) -> None:
        """Forget cached vectors of these texts unless some chunk still has the text (uses index chunks_hash)."""
        self.db.executemany("DELETE FROM embed_cache WHERE text_hash = ? AND NOT EXISTS "
                            "(SELECT 1 FROM chunks WHERE chunks.text_hash = embed_cache.text_hash)",
                            [(h,) for h in hashes])

    def gc(self) -> int:
        """Drop every cached vector no chunk references (e.g. left by a crash between embedding and commit)."""
        with self._tx():
            return self.db.execute("DELETE FROM embed_cache WHERE NOT EXISTS "
                                   "(SELECT 1 FROM chunks WHERE chunks.text_hash = embed_cache.text_hash)").rowcount

    # --- vectors and the embedding cache -----------------------------------------------------------------

    def all_vectors(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self.db.execute("SELECT chunk_id, vec FROM vectors").fetchall()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
        return ids, vecs

    def vectors_for(self, ids: list[int], dim: int) -> np.ndarray:
        """(len(ids), dim) vectors of these chunks, in the order given."""
        q = "SELECT chunk_id, vec FROM vectors WHERE chunk_id IN (SELECT value FROM json_each(?))"
        by_id = dict(self.db.execute(q, (json.dumps([int(i) for i in ids]),)).fetchall())
        return np.frombuffer(b"".join(by_id[int(i)] for i in ids), dtype=np.float32).reshape(len(ids), dim)

    def cached_vectors(self, hashes: list[str]) -> dict[str, np.ndarray]:
        out = {}
        for i in range(0, len(hashes), 500):  # stay under SQLite's bound-parameter limit
            batch = hashes[i: i + 500]
            q = f"SELECT text_hash, vec FROM embed_cache WHERE text_hash IN ({','.join('?' * len(batch))})"
            out.update({h: np.frombuffer(v, dtype=np.float32) for h, v in self.db.execute(q, batch)})
        return out

    def cache_vectors(self, items: list[tuple[str, np.ndarray]]) -> None:
        with self._tx():
            self.db.executemany("INSERT OR REPLACE INTO embed_cache VALUES (?, ?)", [(h, _blob(v)) for h, v in items])

    # --- reads for search --------------------------------------------------------------------------------

    def keyword_search(self, match: str, limit: int, allowed: list[int] | None = None) -> list[tuple[int, float]]:
        """[(chunk_id, BM25 score)] best first; higher is better (SQLite's bm25() is negated)."""
        sql = "SELECT rowid, -bm25(chunks_fts) FROM chunks_fts WHERE chunks_fts MATCH ?"
        args: list = [match]
        if allowed is not None:
            sql += " AND rowid IN (SELECT value FROM json_each(?))"
            args.append(json.dumps(allowed))
        sql += " ORDER BY bm25(chunks_fts) LIMIT ?"
        return [(int(i), float(s)) for i, s in self.db.execute(sql, [*args, limit])]

    def filtered_ids(self, filters: dict) -> list[int]:
        """Chunk ids whose metadata matches every key=value (a value with * or ? is a glob)."""
        sql, args = "SELECT id FROM chunks WHERE 1", []
        for key, value in filters.items():
            if not key.replace("_", "").isalnum():
                raise ValueError(f"bad filter key {key!r}: use letters, digits and _")
            op = "GLOB" if isinstance(value, str) and any(ch in value for ch in "*?[") else "="
            sql += f" AND json_extract(meta, '$.{key}') {op} ?"
            args.append(value)
        return [r[0] for r in self.db.execute(sql, args)]

    def chunk_rows(self, ids: list[int]) -> dict[int, dict]:
        q = ("SELECT c.id, c.text, c.meta, c.num_tokens, p.text, p.meta, c.parent_id FROM chunks c LEFT JOIN parents p "
             "ON p.id = c.parent_id WHERE c.id IN (SELECT value FROM json_each(?))")
        return {r[0]: {"text": r[1], "meta": json.loads(r[2]), "num_tokens": r[3], "parent_text": r[4],
                       "parent_meta": json.loads(r[5]) if r[5] else None, "parent_id": r[6]}
                for r in self.db.execute(q, (json.dumps(ids),))}

    def counts(self) -> dict:
        one = lambda sql: self.db.execute(sql).fetchone()[0]
        return {"documents": one("SELECT count(*) FROM documents"), "chunks": one("SELECT count(*) FROM chunks"),
                "vectors": one("SELECT count(*) FROM vectors"), "cached_vectors": one("SELECT count(*) FROM embed_cache")}

    def _tx(self):
        return _Transaction(self.db)


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, ROLLBACK on error (sqlite3's own context manager does not BEGIN in autocommit)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def _blob(vec: np.ndarray) -> bytes:
    return np.ascontiguousarray(vec, dtype=np.float32).tobytes()
