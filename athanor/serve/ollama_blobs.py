"""Ollama's blob routes: `HEAD /api/blobs/{digest}` and `POST /api/blobs/{digest}` (what `ollama create` and the
`ollama` client's `create_blob` upload before POST /api/create names the files by digest).

A blob is stored as `$ATHANOR_HOME/blobs/sha256-<hex>` only when its bytes hash to the digest in the path (else
400, nothing kept). `/api/create` turns `adapters` / `files` ({file name: digest}) into blob paths here
(`blob_path`). Bodies are capped by the server's body limit (guards.py). Not for model manifests (models/store.py).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from athanor.serve.errors import ServeError, ollama_error_body

router = APIRouter()
DIGEST = re.compile(r"sha256[:-]([0-9a-f]{64})")


def blob_path(store, digest: str) -> Path:
    """The stored file of `digest` (404 when it was never uploaded)."""
    m = DIGEST.fullmatch(digest or "")
    if m is None:
        raise ServeError(f"blob digest must be 'sha256:' and 64 hex digits, got {str(digest)[:80]!r}")
    path = Path(store.home) / "blobs" / f"sha256-{m.group(1)}"
    if not path.is_file():
        raise ServeError(f"blob {digest} not found: upload it with POST /api/blobs/{digest} first", 404)
    return path


@router.head("/api/blobs/{digest}")
async def has_blob(digest: str, request: Request):
    try:
        blob_path(request.app.state.manager.store, digest)
    except ServeError as e:  # headers only (HEAD), but typed as the error body a GET would carry
        return JSONResponse(ollama_error_body(e.message), status_code=e.status)
    return Response(status_code=200)


@router.post("/api/blobs/{digest}")
async def upload_blob(digest: str, request: Request):
    m = DIGEST.fullmatch(digest)
    if m is None:
        raise ServeError(f"blob digest must be 'sha256:' and 64 hex digits, got {digest[:80]!r}")
    folder = Path(request.app.state.manager.store.home) / "blobs"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"sha256-{m.group(1)}"
    if target.is_file():
        return Response(status_code=200)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".upload-")
    hasher = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as f:
            async for chunk in request.stream():
                hasher.update(chunk)
                f.write(chunk)
        if hasher.hexdigest() != m.group(1):
            raise ServeError(f"digest mismatch: the body hashes to sha256:{hasher.hexdigest()}, not {digest}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return Response(status_code=201)
