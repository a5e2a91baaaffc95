"""The console's own data routes under /ui/api (behind the API key like every data route): what the public API
does not list. JSON for scripts, and HTML fragments (`/view`) that htmx swaps into a page.

    GET /ui/api/workflows/runs?app=TITLE&limit=N   recent workflow runs (newest first), without node details
    GET /ui/api/workflows/runs/{id}/view            a run's graph (SVG) and per-node results, as an HTML fragment
    GET /ui/api/kb/{name}/documents                 a knowledge base's documents with their chunk counts
    GET /ui/api/models/{name}/lineage               where a model came from: its FROM chain and recorded lineage

Not for: running workflows or querying bases (the /v1 routes do that; the pages call them directly).
"""

from __future__ import annotations

import json
from pathlib import Path

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from athanor.errors import AthanorError
from athanor.serve.errors import ServeError

router = APIRouter(prefix="/api")
_RUN_FIELDS = ("id", "app_name", "app_mode", "status", "error", "created_at", "finished_at", "elapsed_time",
               "total_steps", "total_tokens", "inputs", "outputs")


@router.get("/workflows/runs")
def workflow_runs(app: str | None = None, limit: int = Query(50, ge=1, le=500)) -> dict:
    from athanor.workflow.runs import RunStore

    rows = RunStore().list_runs(limit if app is None else 2000)
    rows = [r for r in rows if app is None or r["app_name"] == app][:limit]
    return {"object": "list", "data": [{k: r.get(k) for k in _RUN_FIELDS} for r in rows]}


@router.get("/workflows/runs/{run_id}/view", response_class=HTMLResponse)
def workflow_run_view(run_id: str, request: Request):
    from athanor.serve.ui.graph_layout import layout
    from athanor.serve.ui.routes import templates
    from athanor.workflow.runs import RunStore

    try:
        run = RunStore().get_run(run_id, prefix=False)
    except AthanorError as e:
        raise ServeError(str(e), 404, "run_id", "not_found") from None
    statuses = {n["node_id"]: n["status"] for n in run["node_executions"]}
    app = _app_of(run)
    graph = layout(app, statuses) if app is not None else None
    nodes = [{**n, "inputs_json": _pretty(n.get("inputs")), "outputs_json": _pretty(n.get("outputs"))}
             for n in run["node_executions"]]
    return templates().TemplateResponse(request, "workflow_run.html", {
        "run": run, "graph": graph, "nodes": nodes, "outputs_json": _pretty(run.get("outputs"))})


def _app_of(run: dict):
    """The app the run came from (its DSL file as recorded), or None when that file is gone or unreadable."""
    from athanor.workflow.dsl import load_app

    source = Path(run.get("source") or "")
    if source.suffix not in (".yml", ".yaml") or not source.is_file():
        return None
    try:
        return load_app(source)
    except (AthanorError, OSError, ValueError):
        return None


def _pretty(value) -> str:
    return "" if value in (None, {}, []) else json.dumps(value, indent=1, ensure_ascii=False, default=str)[:4000]


@router.get("/kb/{name}/documents")
def kb_documents(name: str) -> dict:
    from athanor.serve.kb_routes import _kb

    kb, lock = _kb(name)
    with lock:
        docs = kb.documents()
    return {"object": "list", "data": [{"source": d.source, "num_chunks": d.num_chunks, "mtime": d.mtime}
                                       for d in docs]}


@router.get("/models/{name:path}/lineage")
def model_lineage(name: str, request: Request) -> dict:
    """The model's FROM chain through the store (each parent that is itself a stored model) and the lineage its
    manifest records (base digest, adapters, training config, datasets: written by train/export when they made
    it); with ops/lineage.py present, also its eval runs and promotions."""
    store = request.app.state.manager.store
    try:
        m = store.get(name)
    except AthanorError as e:
        raise ServeError(str(e), 404, "name", "not_found") from None
    chain, seen, parent = [], {m.name}, m.parent
    while parent and len(chain) < 20:
        chain.append(parent)
        try:
            up = store.get(parent)
        except (AthanorError, ValueError):
            break  # a path or a model no longer stored: the chain ends with it
        if up.name in seen:
            break
        seen.add(up.name)
        parent = up.parent
    return {"name": m.name, "parents": chain, "adapters": m.adapters, "lineage": _recorded_lineage(m, store)}


def _recorded_lineage(manifest, store) -> dict:
    try:  # ops/lineage.py (issue 18's lineage part) gathers evals and promotions too
        from athanor.ops.lineage import model_lineage as gather
    except ImportError:
        return dict(getattr(manifest, "lineage", None) or {})
    info = gather(manifest.name, store)
    return {k: v for k, v in info.items() if k not in ("name", "weights", "format", "adapters", "parent") and v}
