"""`KnowledgeBase`: the Python API behind `athanor kb` — create/open/list/delete bases, add files, query, remove.

`add` is incremental: a file whose bytes hash the same as when it was added is skipped; a changed file is
re-chunked and only chunks whose text is new are embedded (the embedding cache is keyed by text hash); files gone
from an added folder are removed. Each file is committed on its own (store.py), so an interrupted add keeps
everything committed before it. `query` runs vector, keyword (BM25) or hybrid search (RRF k=60, or weighted).

Not for: parsing files (loaders.py), splitting text (chunking.py), SQL (store.py), answering questions (ask.py).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from athanor.rag import chunking, loaders
from athanor.rag.embed import DEFAULT_EMBEDDER, Embedder, embed_batched, get_embedder
from athanor.rag.search import VectorIndex, fts_query, rrf_fuse, traced_query, weighted_fuse
from athanor.rag.store import NewChunk, Store, text_hash

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MODES = ("vector", "keyword", "hybrid")
INDEX_KINDS = ("auto", "exact", "hnsw")


def kb_root() -> Path:
    from athanor.home import athanor_home

    return athanor_home() / "kb"


@dataclass
class KBConfig:
    name: str
    embedder: str = DEFAULT_EMBEDDER  # embedder name (embed.get_embedder)
    chunk_size: int = 500  # max tokens per retrieved chunk, in the embedder's tokens
    chunk_overlap: int = 50  # tokens the next chunk of a section repeats from the previous one
    parent_size: int | None = None  # set → parent–child mode: chunks of chunk_size retrieved, parents returned
    vector_backend: str = "faiss"  # faiss (in memory, rebuilt from SQLite) | qdrant (local) | qdrant:http://HOST:PORT
    index: str = "auto"  # faiss only: exact | hnsw (approximate, ann.py) | auto = hnsw from ann.HNSW_MIN_CHUNKS up


@dataclass
class Hit:
    chunk_id: int
    score: float  # the mode's score: cosine (vector), BM25 (keyword), fused (hybrid)
    text: str  # the chunk, or its parent section in parent–child mode
    matched_text: str  # the chunk that matched
    meta: dict  # source, ext, mtime, and location: heading_path, page, line, row, record
    vector_rank: int | None = None
    keyword_rank: int | None = None

    @property
    def source(self) -> str:
        return self.meta["source"]

    def location(self) -> str:
        """Where in the file: 'page 3', 'line 12' or 'lines 3-9', 'row 4', 'record 0', '§ Intro > Setup'."""
        m, parts = self.meta, []
        for key in ("page", "line", "row", "record", "paragraph"):
            if m.get(key) is None:
                continue
            if key == "line" and m.get("line_end"):
                parts.append(f"lines {m['line']}-{m['line_end']}")
            else:
                parts.append(f"{key} {m[key]}")
        if m.get("heading_path"):
            parts.append("§ " + " > ".join(m["heading_path"]))
        return ", ".join(parts)

    def citation(self) -> str:
        loc = self.location()
        return f"{self.source} ({loc})" if loc else self.source


@dataclass
class AddReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): reported and skipped
    num_chunks: int = 0  # chunks written
    num_embedded: int = 0  # texts sent to the embedder (the rest came from the cache)


class KnowledgeBase:
    def __init__(self, path: Path, embedder: Embedder | None = None):
        self.path = path
        self.store = Store(path / "kb.sqlite")
        self.config = KBConfig(**self.store.get_config())
        self._embedder = embedder
        self._index: VectorIndex | None = None
        self.notices: list[str] = []  # things the user should be told (the CLI prints them, HTTP returns them)

    # --- lifecycle ---------------------------------------------------------------------------------------

    @classmethod
    def create(cls, name: str, embedder: str = DEFAULT_EMBEDDER, chunk_size: int | None = None,
               chunk_overlap: int = 50, parent_size: int | None = None, embedder_obj: Embedder | None = None,
               vector_backend: str = "faiss", index: str = "auto"):
        """A new, empty base. chunk_size defaults to min(500, the embedder's input limit) and a larger request is
        capped to that limit, with a notice in `kb.notices`: a chunk the embedder cannot take whole would have
        its tail missing from vector search (see docs/rag.md)."""
        path = cls._path(name)
        if (path / "kb.sqlite").exists():
            raise ValueError(f"knowledge base {name!r} already exists")
        if vector_backend not in ("faiss", "qdrant") and not vector_backend.startswith("qdrant:http"):
            raise ValueError(f"unknown vector backend {vector_backend!r}; use faiss, qdrant or qdrant:http://HOST:PORT")
        if index not in INDEX_KINDS:
            raise ValueError(f"unknown index {index!r}; use one of {', '.join(INDEX_KINDS)}")
        emb = embedder_obj or get_embedder(embedder)
        notices = []
        if chunk_size is not None and chunk_size > emb.max_tokens:
            notices.append(f"chunk size {chunk_size} capped to {emb.max_tokens} tokens, the most {emb.name} embeds "
                           f"in one pass (longer chunks would lose their tail from vector search); for longer "
                           f"passages in answers use parent–child mode (--parent-size {chunk_size})")
            chunk_size = emb.max_tokens
        config = KBConfig(name, emb.name, chunk_size or min(500, emb.max_tokens), chunk_overlap, parent_size,
                          vector_backend, index)
        probe = [loaders.Block("x")]  # validate sizes now, not at the first add
        if parent_size:
            chunking.chunk_parent_child(probe, len, config.chunk_size, chunk_overlap, parent_size)
        else:
            chunking.chunk_blocks(probe, len, config.chunk_size, chunk_overlap)
        path.mkdir(parents=True, exist_ok=True)
        store = Store(path / "kb.sqlite")
        store.set_config(asdict(config))
        store.close()
        kb = cls(path, emb)
        kb.notices += notices
        return kb

    @classmethod
    def open(cls, name: str, embedder: Embedder | None = None) -> KnowledgeBase:
        path = cls._path(name)
        if not (path / "kb.sqlite").exists():
            raise ValueError(f"no knowledge base named {name!r} (see `athanor kb list`)")
        return cls(path, embedder)

    @staticmethod
    def list() -> list[dict]:
        out = []
        for db in sorted(kb_root().glob("*/kb.sqlite")):
            store = Store(db)
            out.append({**store.get_config(), **store.counts()})
            store.close()
        return out

    @classmethod
    def delete(cls, name: str) -> None:
        path = cls._path(name)
        if not path.exists():
            raise ValueError(f"no knowledge base named {name!r}")
        shutil.rmtree(path)

    def close(self) -> None:
        if self._index is not None and hasattr(self._index, "close"):
            self._index.close()
        self.store.close()

    @staticmethod
    def _path(name: str) -> Path:
        if not _NAME.match(name or ""):
            raise ValueError(f"invalid knowledge base name {name!r}: use letters, digits, '.', '_' or '-'")
        return kb_root() / name

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = get_embedder(self.config.embedder)
        assert self._embedder.name == self.config.embedder, (self._embedder.name, self.config.embedder)
        return self._embedder

    def documents(self):
        return self.store.documents()

    # --- add / remove ------------------------------------------------------------------------------------

    def add(self, paths: list[str | Path], progress: bool = False, prune: bool = True,
            allowed_roots: list[Path] | None = None) -> AddReport:
        """Ingest files and folders; re-adding skips unchanged files and (prune) drops files gone from a folder.
        `allowed_roots` (resolved folders): a file whose real path (symlinks followed) lies outside every one of
        them is reported as failed and not read — the HTTP route's confinement."""
        files = loaders.iter_files(paths)  # resolved: symlinks already followed
        known = {d.source: d for d in self.store.documents()}
        report = AddReport()
        if allowed_roots is not None:
            outside = {f for f in files if not any(f.is_relative_to(r) for r in allowed_roots)}
            report.failed += [(str(f), "outside the allowed roots (a symlink out?); not read") for f in sorted(outside)]
            files = [f for f in files if f not in outside]
        bar = _progress(progress)
        with bar:
            task = bar.add_task("files", total=len(files))
            embedded = (bar, bar.add_task("chunks embedded", total=None))
            for f in files:
                bar.update(task, description=f"files ({f.name[:30]})")
                self._add_file(f, known.get(str(f)), report, embedded)
                bar.advance(task)
        if prune:
            folders = [Path(p).resolve() for p in paths if Path(p).is_dir()]
            seen = {str(f) for f in files}
            for source in known:
                if source not in seen and any(Path(source).is_relative_to(d) for d in folders):
                    self.remove(source)
                    report.removed.append(source)
        return report

    def _add_file(self, path: Path, known, report: AddReport, progress) -> None:
        try:
            if known is not None and known.content_hash == hashlib.sha256(path.read_bytes()).hexdigest():
                report.unchanged.append(str(path))  # same bytes: a touched file is not re-embedded
                return
            doc = loaders.load_file(path)
        except (loaders.LoadError, OSError) as e:  # reported and skipped; the rest ingests
            report.failed.append((str(path), str(e)))
            return
        self._ingest(doc, known, report, progress)

    def add_texts(self, documents: list[tuple[str, str]]) -> AddReport:
        """Ingest in-memory documents [(source name, text)]: the HTTP route's way in. The source's suffix picks
        the parser (.md → headings; others plain text); the same source again replaces it unless unchanged."""
        known = {d.source: d for d in self.store.documents()}
        report = AddReport()
        for source, text in documents:
            if not source or not source.strip():
                raise ValueError("every document needs a non-empty source name")
            try:
                doc = loaders.load_bytes(source, text.encode("utf-8"), time.time())
            except loaders.LoadError as e:
                report.failed.append((source, str(e)))
                continue
            if known.get(source) is not None and known[source].content_hash == doc.content_hash:
                report.unchanged.append(source)
                continue
            self._ingest(doc, known.get(source), report, None)
        return report

    def _ingest(self, doc: loaders.LoadedDoc, known, report: AddReport, progress) -> None:
        parents, chunks = self._chunk(doc)
        vecs = self._embed([c.text for c in chunks], report, progress)
        for c, v in zip(chunks, vecs):
            c.vec = v
        removed, new_ids = self.store.replace_document(doc.source, doc.content_hash, doc.mtime, parents, chunks)
        if self._index is not None:
            self._index.remove(removed)
            self._index.add(np.array(new_ids), np.stack([c.vec for c in chunks]) if chunks else
                            np.zeros((0, self.embedder.dim), np.float32))
        (report.updated if known is not None else report.added).append(doc.source)
        report.num_chunks += len(chunks)

    def _chunk_size(self) -> int:
        """The configured chunk size, capped to the embedder's input (bases made before the cap may exceed it)."""
        size, limit = self.config.chunk_size, self.embedder.max_tokens
        if size > limit:
            note = f"this base's chunk size {size} exceeds {self.embedder.name}'s {limit}-token input; new chunks " \
                   f"are cut at {limit} tokens"
            if note not in self.notices:
                self.notices.append(note)
        return min(size, limit)

    def _chunk(self, doc: loaders.LoadedDoc) -> tuple[list[tuple[str, dict]], list[NewChunk]]:
        cfg, count, size = self.config, self.embedder.count_tokens, self._chunk_size()
        overlap, empty = min(cfg.chunk_overlap, size // 2), np.zeros(0, np.float32)
        if cfg.parent_size:
            pairs = chunking.chunk_parent_child(doc.blocks, count, size, overlap, cfg.parent_size)
            parents = [(p.text, {**doc.meta, **p.meta}) for p, _ in pairs]
            chunks = [NewChunk(c.text, {**doc.meta, **c.meta}, c.num_tokens, empty, i)
                      for i, (_, children) in enumerate(pairs) for c in children]
            return parents, chunks
        chunks = chunking.chunk_blocks(doc.blocks, count, size, overlap)
        return [], [NewChunk(c.text, {**doc.meta, **c.meta}, c.num_tokens, empty) for c in chunks]

    def _embed(self, texts: list[str], report: AddReport, progress) -> list[np.ndarray]:
        """Vectors for texts, from the cache where the same text was embedded before."""
        hashes = [text_hash(t) for t in texts]
        cached = self.store.cached_vectors(hashes)
        missing = list(dict.fromkeys(h for h in hashes if h not in cached))
        if missing:
            by_hash = dict(zip(hashes, texts))
            vecs = embed_batched(self.embedder, [by_hash[h] for h in missing], progress=progress)
            self.store.cache_vectors(list(zip(missing, vecs)))
            cached.update(zip(missing, vecs))
            report.num_embedded += len(missing)
        return [cached[h] for h in hashes]

    def remove(self, source: str | Path) -> int:
        """Drop one source file's document, chunks and vectors. Returns the number of chunks removed."""
        source = str(source) if str(source) in {d.source for d in self.documents()} else str(Path(source).resolve())
        removed = self.store.delete_source(source)
        if self._index is not None:
            self._index.remove(removed)
        return len(removed)

    def gc(self) -> int:
        """Drop cached embeddings no chunk uses any more; returns how many were dropped."""
        return self.store.gc()

    # --- query -------------------------------------------------------------------------------------------

    @traced_query  # a `retrieval` span per search (search.py)
    def query(self, text: str, k: int = 5, mode: str = "hybrid", filters: dict | None = None,
              threshold: float | None = None, fusion: str = "rrf", alpha: float = 0.5, rrf_k: int = 60) -> list[Hit]:
        """Top-k hits. `threshold` drops hits whose mode score is below it; `filters` are metadata key=value."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
        if fusion not in ("rrf", "weighted"):
            raise ValueError(f"unknown fusion {fusion!r}; use rrf or weighted")
        if k < 1:
            raise ValueError("k must be at least 1")
        allowed = self.store.filtered_ids(filters) if filters else None
        num_candidates = max(4 * k, 50)
        vec = self._vector_search(text, num_candidates, allowed) if mode != "keyword" else []
        kw = self._keyword_search(text, num_candidates, allowed) if mode != "vector" else []
        if mode == "vector":
            fused = vec
        elif mode == "keyword":
            fused = kw
        elif fusion == "rrf":
            fused = rrf_fuse([[i for i, _ in vec], [i for i, _ in kw]], k=rrf_k)
        else:
            fused = weighted_fuse(vec, kw, alpha)
        if threshold is not None:
            fused = [(i, s) for i, s in fused if s >= threshold]
        return self._hits(fused, k, {i: r for r, (i, _) in enumerate(vec, 1)}, {i: r for r, (i, _) in enumerate(kw, 1)})

    def _vector_search(self, text: str, n: int, allowed: list[int] | None) -> list[tuple[int, float]]:
        if allowed is not None and not allowed:
            return []
        return self.index.search(self.embedder.embed([text])[0], n, allowed)

    def _keyword_search(self, text: str, n: int, allowed: list[int] | None) -> list[tuple[int, float]]:
        match = fts_query(text)
        return self.store.keyword_search(match, n, allowed) if match else []

    def _hits(self, fused: list[tuple[int, float]], k: int, vec_rank: dict, kw_rank: dict) -> list[Hit]:
        rows = self.store.chunk_rows([i for i, _ in fused[: 8 * k]])
        hits, seen_parents = [], set()
        for cid, score in fused:
            row = rows.get(cid)
            if row is None:
                continue
            if row["parent_id"] is not None:  # parent–child: one hit per parent section
                if row["parent_id"] in seen_parents:
                    continue
                seen_parents.add(row["parent_id"])
            hits.append(Hit(cid, score, row["parent_text"] or row["text"], row["text"], row["meta"],
                            vec_rank.get(cid), kw_rank.get(cid)))
            if len(hits) == k:
                break
        return hits

    def index_kind(self, num_vectors: int) -> str:
        """exact or hnsw: what `index: auto` means for a base of this size (decided when the index is built)."""
        from athanor.rag.ann import HNSW_MIN_CHUNKS

        kind = self.config.index
        return kind if kind != "auto" else ("hnsw" if num_vectors >= HNSW_MIN_CHUNKS else "exact")

    @property
    def index(self):
        """The vector index (VectorIndex or QdrantIndex), made to match SQLite's vectors when first needed."""
        if self._index is None:
            backend, dim = self.config.vector_backend, self.embedder.dim
            if backend == "faiss":
                ids, vecs = self.store.all_vectors(dim)
                if self.index_kind(len(ids)) == "hnsw":
                    from athanor.rag.ann import HNSWIndex

                    index = HNSWIndex(dim, lambda chunk_ids: self.store.vectors_for(chunk_ids, dim), self.path)
                    index.reconcile(ids, vecs)
                    index.save()  # now, not only at close: a CLI query process never closes the base
                else:
                    index = VectorIndex(dim)
                    index.add(ids, vecs)
            else:
                from athanor.rag.qdrant import QdrantIndex

                index = QdrantIndex(backend.removeprefix("qdrant:") if ":" in backend else self.path / "qdrant", dim,
                                    collection=f"athanor_{self.config.name}")
                index.reconcile(*self.store.all_vectors(dim))
            self._index = index
        return self._index


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    disable=not enabled, transient=False)
