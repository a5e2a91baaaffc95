"""The traces and feedback routes: GET /v1/traces, GET /v1/traces/{id}, POST /v1/feedback.

They read and write the server's trace store (`app.state.tracing`, ops/tracing_setup.py) after a flush, so a
call's trace is readable as soon as its response has arrived. Errors are OpenAI-shaped one-liners; with tracing
off (`athanor serve --no-trace`) the reads answer 404 and feedback 409. These routes are not traced themselves
(middleware.TRACED_PREFIXES names only model routes). Not for: making spans (trace_calls.py, middleware.py) or
exporting datasets and evals (their own modules).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, Request

from athanor.ops.trace_store import FEEDBACK_FILTERS, parse_score, parse_since
from athanor.serve.errors import ServeError

router = APIRouter()
MAX_LIMIT = 1000  # rows per page of GET /v1/traces
MAX_TEXT = 64 * 1024  # characters of a feedback comment or correction


def _tracing(request: Request, status: int = 404):
    t = getattr(request.app.state, "tracing", None)
    if t is None:
        raise ServeError("tracing is off on this server (started with --no-trace): no traces are recorded",
                         status, code="tracing_disabled")
    return t


async def _flushed(request: Request, status: int = 404):
    t = _tracing(request, status)
    await asyncio.to_thread(t.flush)  # spans ended before this request are on disk
    return t.store


def _int(value: str | None, name: str, default: int, low: int, high: int) -> int:
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except ValueError:
        raise ServeError(f"{name} must be an integer, got {value!r}", 400, name) from None
    if not low <= n <= high:
        raise ServeError(f"{name} must be between {low} and {high}, got {n}", 400, name)
    return n


def _bool(value: str | None, name: str) -> bool:
    if value is None or value.lower() in ("", "0", "false", "no"):
        return False
    if value.lower() in ("1", "true", "yes"):
        return True
    raise ServeError(f"{name} must be true or false, got {value!r}", 400, name)


@router.get("/v1/traces")
async def list_traces(request: Request, model: str | None = None, since: str | None = None,
                      feedback: str | None = None, errors: str | None = None, limit: str | None = None,
                      offset: str | None = None):
    """Newest first; filters as `athanor traces list` takes them."""
    if feedback not in (None, "", *FEEDBACK_FILTERS):
        raise ServeError(f"feedback must be one of {', '.join(FEEDBACK_FILTERS)}, got {feedback!r}", 400, "feedback")
    try:
        start = parse_since(since)
    except ValueError as e:
        raise ServeError(str(e), 400, "since") from None
    n = _int(limit, "limit", 100, 1, MAX_LIMIT)
    skip = _int(offset, "offset", 0, 0, 2**31)
    wants_errors = _bool(errors, "errors")
    store = await _flushed(request)
    rows = await asyncio.to_thread(store.list, model or None, start, feedback or None, wants_errors, n, skip)
    return {"object": "list", "data": rows}


@router.get("/v1/traces/{trace_id}")
async def get_trace(trace_id: str, request: Request):
    store = await _flushed(request)
    trace = await asyncio.to_thread(store.get, trace_id)
    if trace is None:
        raise ServeError(f"no trace {trace_id!r}", 404, "trace_id", "trace_not_found")
    return trace


@router.post("/v1/feedback")
async def feedback(request: Request):
    """{"trace_id", "score": -1..1 or "good"/"bad", "comment", "correction"} -> the stored feedback row."""
    store = await _flushed(request, 409)
    body = await _json_object(request)
    trace_id = body.get("trace_id")
    if not isinstance(trace_id, str) or not trace_id:
        raise ServeError("trace_id must be a non-empty string", 400, "trace_id")
    if "score" not in body:
        raise ServeError("score is required: a number in -1..1 or 'good'/'bad'", 400, "score")
    try:
        score = parse_score(body["score"])
    except ValueError as e:
        raise ServeError(str(e), 400, "score") from None
    texts = {k: _text(body.get(k), k) for k in ("comment", "correction")}
    try:
        return await asyncio.to_thread(store.add_feedback, trace_id, score, texts["comment"], texts["correction"],
                                       "http")
    except KeyError:
        raise ServeError(f"no trace {trace_id!r}", 404, "trace_id", "trace_not_found") from None


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ServeError("the body is not valid JSON", 400) from None
    if not isinstance(body, dict):
        raise ServeError("the body must be a JSON object", 400)
    return body


def _text(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ServeError(f"{name} must be a string", 400, name)
    if len(value) > MAX_TEXT:
        raise ServeError(f"{name} is longer than {MAX_TEXT} characters", 400, name)
    return value
