"""Eval runs over HTTP (read-only): GET /v1/evals, GET /v1/evals/{run_id}, GET /v1/evals/compare?a=RUN&b=RUN.

    GET /v1/evals?limit=&offset=&model=   {"object": "list", "data": [run summaries, newest first, no items]}
    GET /v1/evals/{run_id}                the run with its items (ops.evals.load_run's shape)
    GET /v1/evals/compare?a=RUN&b=RUN     ops.compare.compare_runs(a, b): diff, CI, p_value, worse/better, items

Runs live in $ATHANOR_HOME/evals.sqlite (ops/eval_store.py, read per request: `athanor eval` in another process
adds runs while the server runs). Errors are OpenAI-shaped one-liners: 404 unknown run, 400 bad parameters.
Not for: running evals (ops/evals.py, `athanor eval`) or the console page (ui/ops_pages.py).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from athanor.serve.errors import ServeError

router = APIRouter(prefix="/v1/evals", tags=["evals"])
MAX_LIMIT = 1000


def _runs(limit: int, offset: int, model: str | None) -> list[dict]:
    from athanor.ops.eval_store import EvalStore

    with EvalStore() as store:
        return store.list(limit, offset, model)


def _load(run_id: str, param: str) -> dict:
    from athanor.ops.evals import load_run

    try:
        return load_run(run_id)
    except KeyError:
        raise ServeError(f"no eval run {run_id[:100]!r}", 404, param, "eval_run_not_found") from None


@router.get("")
async def list_runs(limit: int = 100, offset: int = 0, model: str | None = None) -> dict:
    if not 1 <= limit <= MAX_LIMIT:
        raise ServeError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}", 400, "limit")
    if offset < 0:
        raise ServeError(f"offset must be 0 or more, got {offset}", 400, "offset")
    return {"object": "list", "data": await asyncio.to_thread(_runs, limit, offset, model or None)}


@router.get("/compare")
async def compare(a: str, b: str) -> dict:
    from athanor.ops.compare import compare_runs

    run_a = await asyncio.to_thread(_load, a, "a")
    run_b = await asyncio.to_thread(_load, b, "b")
    return await asyncio.to_thread(compare_runs, run_a, run_b)


@router.get("/{run_id}")
async def get_run(run_id: str) -> dict:
    return await asyncio.to_thread(_load, run_id, "run_id")
