"""HTTP routes for eval runs (the console's view of `athanor eval`), a FastAPI `router` included by serve/app.py.

    GET /v1/evals?limit=&offset=&model=     {"object": "list", "data": [run summaries, newest first]}
    GET /v1/evals/compare?a=RUN&b=RUN       the paired comparison of two runs (ops/compare.py compare_runs)
    GET /v1/evals/{run_id}                  one run with its items

Runs are read from `app.state.evals_path` when set, else `$ATHANOR_HOME/evals.sqlite` (where `athanor eval`
writes). An unknown run id is a 404 in OpenAI's error shape. Handlers are plain `def` (FastAPI's worker threads).
Not for: running evals (the CLI does; a run takes minutes) or the statistics (ops/).
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Request

from athanor.ops.compare import compare_runs
from athanor.ops.eval_store import EvalStore
from athanor.serve.errors import ServeError

router = APIRouter(prefix="/v1/evals", tags=["evals"])


def _store(request: Request) -> EvalStore:
    return EvalStore(getattr(request.app.state, "evals_path", None))


def _run(store: EvalStore, run_id: str, param: str) -> dict:
    run = store.get(run_id)
    if run is None:
        raise ServeError(f"no eval run {run_id!r}", 404, param, "eval_run_not_found")
    return run


@router.get("")
def list_runs(request: Request, limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0),
              model: str | None = None) -> dict:
    with _store(request) as store:
        return {"object": "list", "data": store.list(limit=limit, offset=offset, model=model)}


@router.get("/compare")
def compare(request: Request, a: str = Query(..., description="baseline run id"),
            b: str = Query(..., description="candidate run id")) -> dict:
    with _store(request) as store:
        return compare_runs(_run(store, a, "a"), _run(store, b, "b"))


@router.get("/{run_id}")
def get_run(request: Request, run_id: str) -> dict:
    with _store(request) as store:
        return _run(store, run_id, "run_id")
