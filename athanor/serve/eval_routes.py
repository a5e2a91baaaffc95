"""HTTP routes for eval runs (the console's view of `athanor eval`), a FastAPI `router` included by serve/app.py.

    GET /v1/evals?limit=&offset=&model=     {"object": "list", "data": [run summaries, newest first]}
    GET /v1/evals/compare?a=RUN&b=RUN       the paired comparison of two runs (ops/compare.py compare_runs)
    GET /v1/evals/{run_id}                  one run with its items
    POST /v1/promote {"a": RUN, "b": RUN, "alias"?}   B's model over A's, gated on the two runs (ops/promote.py):
                                            409 with the numbers when B is worse beyond noise, else the record

Runs are read from `app.state.evals_path` when set, else `$ATHANOR_HOME/evals.sqlite` (where `athanor eval`
writes). An unknown run id is a 404 in OpenAI's error shape. Handlers are plain `def` (FastAPI's worker threads).
Not for: running evals (the CLI does; a run takes minutes) or the statistics (ops/).
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from athanor.ops.compare import compare_runs
from athanor.ops.eval_store import EvalStore
from athanor.serve.errors import ServeError

router = APIRouter(prefix="/v1/evals", tags=["evals"])
promote_router = APIRouter(tags=["evals"])


def _store(request: Request) -> EvalStore:
    return EvalStore(getattr(request.app.state, "evals_path", None))


def _run(store: EvalStore, run_id: str, param: str) -> dict:
    run = store.get(run_id)
    if run is None:
        raise ServeError(f"no eval run {run_id!r}", 404, param, "eval_run_not_found")
    return run


@router.get("")
def list_runs(request: Request, limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=2**31),
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


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    a: str = Field(..., max_length=200, description="the baseline run (the model serving now)")
    b: str = Field(..., max_length=200, description="the candidate run (the model to promote)")
    alias: str | None = Field(None, max_length=200, description="the serving alias to move (default: prod, or A's "
                                                                 "model when that is an alias)")


@promote_router.post("/v1/promote")
def promote(body: PromoteRequest, request: Request) -> dict:
    """Point a serving alias at run B's model unless it scored worse than run A's beyond noise (409 then)."""
    from athanor.errors import AthanorError
    from athanor.ops.promote import PromotionRefused, promote_runs

    with _store(request) as store:
        a, b = _run(store, body.a, "a"), _run(store, body.b, "b")
    try:
        return promote_runs(a, b, alias=body.alias, store=request.app.state.manager.store)
    except PromotionRefused as e:
        raise ServeError(str(e), 409, "b", "promotion_refused") from None
    except AthanorError as e:
        raise ServeError(str(e), 404 if "not found" in str(e) else 400, None) from None
