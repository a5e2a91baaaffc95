"""POST /v1/traces/export: training data from the server's traces, as a JSON Lines body.

Body: {"format": "sft"|"dpo", "trace_ids": [...] (optional), "model", "since" (seconds or 1h), "feedback"
(good|bad|any), "errors"} -> application/jsonl, one LLaMA-Factory sharegpt record a line (ops/datasets.py makes
them). The source trace ids come back in the `X-Trace-Ids` header (comma separated) for lineage. Errors are
OpenAI-shaped: 400 bad filters, 404 an unknown trace id.
Not for: listing traces or feedback (the traces routes).
"""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from athanor.serve.errors import ServeError

router = APIRouter()


class ExportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["sft", "dpo"] = "sft"
    trace_ids: list[str] | None = Field(None, max_length=100_000)
    model: str | None = None
    since: str | float | None = None
    feedback: Literal["good", "bad", "any"] = "any"
    errors: bool = False


def _store(request: Request):
    """The running server's trace store, else the default one (tracing off: still readable)."""
    tracing = getattr(request.app.state, "tracing", None)
    if tracing is not None:
        tracing.flush()  # spans ended just before this request are on disk
        return tracing.store, False
    from athanor.ops.trace_store import TraceStore

    return TraceStore(), True


def _export(request: Request, body: ExportRequest) -> list[dict]:
    from athanor.ops.datasets import export_traces, parse_since

    try:
        since = parse_since(body.since)  # seconds ago or 1h, as GET /v1/traces takes it
    except ValueError as e:
        raise ServeError(str(e), 400, "since") from None
    store, owned = _store(request)
    try:
        return export_traces(store, body.format, trace_ids=body.trace_ids, model=body.model, since=since,
                             feedback=body.feedback, errors=body.errors)
    except KeyError as e:
        raise ServeError(f"trace {e.args[0]!r} not found", 404, "trace_ids", "trace_not_found") from None
    except ValueError as e:
        raise ServeError(str(e), 400) from None
    finally:
        if owned:
            store.close()


@router.post("/v1/traces/export", response_class=Response, responses={
    200: {"description": "one LLaMA-Factory record per line", "content": {"application/jsonl": {}}}})
async def export_traces_route(body: ExportRequest, request: Request):
    from athanor.ops.datasets import to_jsonl

    records = await asyncio.to_thread(_export, request, body)
    ids = ",".join(r["_trace_id"] for r in records)
    return Response(to_jsonl(records), media_type="application/jsonl",
                    headers={"X-Trace-Ids": ids} if len(ids) < 8000 else {})
