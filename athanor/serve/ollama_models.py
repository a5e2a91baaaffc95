"""The Ollama model-management routes: /api/tags, /api/show, /api/ps, /api/version, /api/copy, /api/delete,
/api/create, /api/pull (and /api/push), backed by the store (models/store.py) and the model manager.

`/api/create` takes the current request shape (`from`, `system`, `template`, `parameters`, `messages`,
`license`) or the older `modelfile` string; FROM must be a store name or an absolute path (there is no
Modelfile directory to resolve relative paths against). Uploaded blobs (`files`, `adapters` by digest: one .gguf
model, llama.cpp LoRA .gguf adapters; ollama_blobs.py) are used from $ATHANOR_HOME/blobs. `quantize`
is not supported. Not for generation (ollama_api.py).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from athanor import __version__
from athanor.serve.create_guard import create_errors
from athanor.serve.errors import ServeError

router = APIRouter()


class NameRequest(BaseModel):
    """`model`, or the older `name` that some clients still send."""

    model_config = ConfigDict(extra="ignore", strict=True)  # "2" or true for a number: 400

    model: str = ""
    name: str = ""
    verbose: bool = False

    @model_validator(mode="after")
    def _one_name(self):
        self.model = self.model or self.name
        if not self.model:
            raise ValueError("model is required")
        return self


class CopyRequest(BaseModel):
    model_config = ConfigDict(strict=True)

    source: str = Field(min_length=1)
    destination: str = Field(min_length=1)


class CreateRequest(NameRequest):
    from_: str | None = Field(None, alias="from")
    modelfile: str | None = None
    system: str | None = None
    template: str | None = None
    license: str | list[str] | None = None
    parameters: dict[str, Any] | None = None
    messages: list[dict[str, str]] | None = None
    files: dict[str, str] | None = None
    adapters: dict[str, str] | None = None
    quantize: str | None = None
    stream: bool = True

    def modelfile_text(self, store=None) -> str:
        """`files` / `adapters` name uploaded blobs by digest (ollama_blobs.py): one .gguf as FROM, LoRA .gguf
        adapters as ADAPTER lines."""
        from athanor.models.modelfile import Modelfile, render_modelfile_text
        from athanor.serve.ollama_blobs import blob_path

        if self.quantize:
            raise ServeError("quantize is not supported by /api/create; use `athanor quantize`")
        if self.modelfile:
            if self.from_ or self.files or self.adapters:
                raise ServeError("give `modelfile` or `from` / `files` / `adapters`, not both")
            return self.modelfile
        from_ = self.from_
        if self.files:
            if from_ or len(self.files) != 1:
                raise ServeError("`files` must hold one uploaded .gguf model (and no `from`); safetensors folders "
                                 "are not supported as blobs")
            from_ = str(blob_path(store, next(iter(self.files.values()))))
        if not from_:
            raise ServeError("`from` is required (a store name or an absolute weights path)")
        adapters = [str(blob_path(store, d)) for d in (self.adapters or {}).values()]
        license = "\n".join(self.license) if isinstance(self.license, list) else self.license
        for m in self.messages or []:
            if not (isinstance(m.get("role"), str) and isinstance(m.get("content"), str)) or set(m) - {"role", "content"}:
                raise ServeError("each of `messages` needs a string `role` and `content`, nothing else")
        mf = Modelfile(from_=from_, parameters=dict(self.parameters or {}), template=self.template,
                       system=self.system, license=license, messages=list(self.messages or []), adapters=adapters)
        return render_modelfile_text(mf)


@router.get("/api/version")
async def version():
    return {"version": __version__}


@router.get("/api/tags")
async def tags(request: Request):
    store = request.app.state.manager.store
    return {"models": [_entry(m, store, name) for name, m in store.served() if m.weights]}


@router.post("/api/show")
async def show(body: NameRequest, request: Request):
    from athanor.serve.model_details import capabilities, details, model_facts, model_info

    manager = request.app.state.manager
    store = manager.store
    m = store.get(body.model)
    info = model_facts(store, body.model)
    params = "\n".join(f"{k} {json.dumps(x) if k == 'stop' else x}" for k, v in m.parameters.items()
                       for x in (v if isinstance(v, list) else [v]))
    return {"modelfile": store.render_modelfile(m), "parameters": params, "template": info.get("template") or "",
            "system": m.system or "", "license": info.get("license") or "", "details": details(m, info),
            "model_info": model_info(info), "messages": m.messages or [],
            "capabilities": capabilities(info), "modified_at": m.created_at or None}


@router.get("/api/ps")
async def ps(request: Request):
    manager = request.app.state.manager
    out = []
    for name, lm in list(manager.models.items()):
        m = manager.store.get(name)
        expires = lm.expires_at
        out.append(_entry(m, manager.store) | {"expires_at": expires.isoformat() if expires else "9999-12-31T23:59:59Z",
                                "size": lm.memory_bytes, "size_vram": 0, "context_length": lm.max_model_len})
    return {"models": out}


@router.post("/api/copy")
async def copy(body: CopyRequest, request: Request):
    request.app.state.manager.store.copy(body.source, body.destination)
    return Response(status_code=200)


@router.delete("/api/delete")
async def delete(body: NameRequest, request: Request):
    manager = request.app.state.manager
    full = manager.store.get(body.model).name
    await manager.unload(full)
    manager.store.remove(body.model)
    return Response(status_code=200)


@router.post("/api/create")
async def create(body: CreateRequest, request: Request):
    store = request.app.state.manager.store
    text = body.modelfile_text(store)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "Modelfile"
        path.write_text(text, encoding="utf-8")
        with create_errors(text, tmp):
            store.create(body.model, path)
    statuses = [{"status": "reading model metadata"}, {"status": "writing manifest"}, {"status": "success"}]
    if not body.stream:
        return JSONResponse(statuses[-1])
    lines = "".join(json.dumps(s) + "\n" for s in statuses)
    return StreamingResponse(iter([lines]), media_type="application/x-ndjson")


@router.post("/api/pull")
@router.post("/api/push")
async def pull():
    raise ServeError("athanor has no model registry: models are created from local files "
                     "(POST /api/create with `from` = a .gguf file or HF directory, or `athanor create`)")


def _entry(m, store, name: str | None = None) -> dict:
    """One model as Ollama lists it; `name` is the serving name when it differs from the manifest's (an alias)."""
    from athanor.models.store import short_name
    from athanor.serve.model_details import details, model_facts

    try:
        info = model_facts(store, m.name)
    except Exception:  # noqa: BLE001 - an unreadable file still lists, with empty details
        info = {}
    name = name or m.name
    return {"name": short_name(name), "model": name, "modified_at": m.created_at or None,
            "size": _size(m.weights), "digest": hashlib.sha256(m.model_dump_json().encode()).hexdigest(),
            "details": details(m, info)}


def _size(weights: str) -> int:
    p = Path(weights)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else 0
