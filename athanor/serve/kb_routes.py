"""HTTP routes for knowledge bases, a FastAPI `router` for `athanor serve` to include (`app.include_router`).

    GET    /v1/kb                      list bases
    POST   /v1/kb                      create {name, embedder?, chunk_size?, chunk_overlap?, parent_size?}
    DELETE /v1/kb/{name}               delete
    POST   /v1/kb/{name}/documents     add {documents: [{source, text}]} (same source again: replaced if changed)
    POST   /v1/kb/{name}/paths         add {paths: [absolute path on the server], prune?} (files or folders)
    POST   /v1/kb/{name}/query         {query, k?, mode?, filters?, threshold?, fusion?} → {hits: [...]}

Adding by server path is off unless allowed roots are configured when serve starts: `app.state.kb_roots` (a list
of folders) or else the environment variable ATHANOR_KB_ROOTS (folders separated by os.pathsep). A path must be
absolute and, after `..` and symlinks are resolved, lie under a root, else 403; files found inside a folder
whose real path leaves the roots (symlinks out) are reported as failed and never read.

Input is validated by pydantic; bad input raises AthanorError, which the server answers in its own error shape.
Each open base is kept (one per name) behind a lock: SQLite and the vector index are used by one request at a
time, in FastAPI's worker threads (the handlers are plain `def`).

Not for: answering questions (`kb ask`).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from athanor.errors import AthanorError

router = APIRouter(prefix="/v1/kb", tags=["knowledge bases"])
_open: dict[str, tuple[object, threading.Lock]] = {}
_open_lock = threading.Lock()


class CreateRequest(BaseModel):
    name: str = Field(description="base name: letters, digits, '.', '_' or '-'")
    embedder: str = Field("all-minilm-l6-v2", description="embedder name or openai:URL#MODEL")
    chunk_size: int | None = Field(None, ge=8, description="tokens per chunk (default: min(500, embedder max))")
    chunk_overlap: int = Field(50, ge=0, description="tokens shared by consecutive chunks")
    parent_size: int | None = Field(None, description="parent–child mode: parent size in tokens")
    index: Literal["auto", "exact", "hnsw"] = Field("auto", description="vector index (auto: hnsw from 50k chunks)")


class Document(BaseModel):
    source: str = Field(min_length=1, description="a name for citations, e.g. 'handbook.md' (suffix picks parser)")
    text: str = Field(description="the document's content")


class AddRequest(BaseModel):
    documents: list[Document] = Field(min_length=1)


class AddPathsRequest(BaseModel):
    paths: list[str] = Field(min_length=1, description="absolute paths of files or folders on the server")
    prune: bool = Field(True, description="drop documents whose files are gone from an added folder")


class QueryRequest(BaseModel):
    query: str = Field(min_length=1)
    k: int = Field(5, ge=1, le=100)
    mode: Literal["vector", "keyword", "hybrid"] = "hybrid"
    filters: dict[str, str | int | float] | None = Field(None, description="metadata key=value; * ? glob")
    threshold: float | None = None
    fusion: Literal["rrf", "weighted"] = "rrf"


def _kb(name: str):
    from athanor.rag.kb import KnowledgeBase

    key = str(_call(KnowledgeBase._path, name))  # keyed by path: ATHANOR_HOME may differ between apps
    with _open_lock:
        if key not in _open or not _open[key][0].path.exists():
            _open[key] = (_call(KnowledgeBase.open, name), threading.Lock())
        return _open[key]


def _call(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except ValueError as e:  # our one-line user errors → the server's 400 shape
        raise AthanorError(str(e)) from e


@router.get("")
def list_bases() -> dict:
    from athanor.rag.kb import KnowledgeBase

    return {"data": KnowledgeBase.list()}


@router.post("", status_code=201)
def create(req: CreateRequest) -> dict:
    from dataclasses import asdict

    from athanor.rag.kb import KnowledgeBase

    kb = _call(KnowledgeBase.create, req.name, req.embedder, req.chunk_size, req.chunk_overlap, req.parent_size,
               index=req.index)
    with _open_lock:
        _open[str(kb.path)] = (kb, threading.Lock())
    return {**asdict(kb.config), "notices": kb.notices}


@router.delete("/{name}")
def delete(name: str) -> dict:
    from athanor.rag.kb import KnowledgeBase

    with _open_lock:
        kb, lock = _open.pop(str(_call(KnowledgeBase._path, name)), (None, None))
    if kb is not None:
        with lock:
            kb.close()
    _call(KnowledgeBase.delete, name)
    return {"deleted": name}


@router.post("/{name}/documents")
def add_documents(name: str, req: AddRequest) -> dict:
    from dataclasses import asdict

    kb, lock = _kb(name)
    with lock:
        report = _call(kb.add_texts, [(d.source, d.text) for d in req.documents])
    return asdict(report)


def allowed_roots(request: Request) -> list[Path]:
    """The folders server paths may come from, resolved; [] when adding by path is off."""
    roots = getattr(request.app.state, "kb_roots", None)
    if roots is None:
        roots = [r for r in os.environ.get("ATHANOR_KB_ROOTS", "").split(os.pathsep) if r.strip()]
    return [Path(r).expanduser().resolve() for r in roots]


def _confined(path: str, roots: list[Path]) -> Path:
    from athanor.serve.errors import ServeError

    if not roots:
        raise ServeError("adding documents by server path is off; start serve with ATHANOR_KB_ROOTS=/some/folder",
                         403, "paths", "path_not_allowed")
    if "\0" in path:  # os and pathlib raise ValueError on it (a 500 before)
        raise ServeError("a path may not contain NUL bytes", 400, "paths")
    if not os.path.isabs(path):
        raise ServeError(f"{path[:200]!r} is not an absolute path", 400, "paths")
    real = Path(path).resolve()  # `..` and symlinks resolved before the check, so neither can step outside
    if not any(real.is_relative_to(r) for r in roots):
        raise ServeError(f"{path!r} is outside the allowed roots", 403, "paths", "path_not_allowed")
    if not real.exists():
        raise ServeError(f"no such file or folder: {path!r}", 400, "paths")
    return real


@router.post("/{name}/paths")
def add_paths(name: str, req: AddPathsRequest, request: Request) -> dict:
    from dataclasses import asdict

    roots = allowed_roots(request)
    real = [_confined(p, roots) for p in req.paths]  # every path checked before anything is read
    kb, lock = _kb(name)
    with lock:
        report = _call(kb.add, real, prune=req.prune, allowed_roots=roots)
    return {**asdict(report), "notices": kb.notices}


@router.post("/{name}/query")
def query(name: str, req: QueryRequest) -> dict:
    kb, lock = _kb(name)
    with lock:
        hits = _call(kb.query, req.query, k=req.k, mode=req.mode, filters=req.filters, threshold=req.threshold,
                     fusion=req.fusion)
    return {"hits": [{"rank": n, "score": h.score, "source": h.source, "location": h.location(),
                      "citation": h.citation(), "text": h.text, "meta": h.meta} for n, h in enumerate(hits, 1)]}
