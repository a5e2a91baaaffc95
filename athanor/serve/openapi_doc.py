"""The OpenAPI document, made to say what the server really answers (schemathesis holds the server to it).

FastAPI documents a 422 `{"detail": [...]}` for every route with a body; this server answers bad input with a
400 (and 403/404/409/413/415) in the API's own error shape. So every operation gets a `4XX` response with the
OpenAI error object (Ollama's `{"error": "..."}` under /api/, Dify's `{"code", "message", "status"}` on the
workflow routes), the 422 goes, and routes that stream by
default say so (NDJSON / SSE next to JSON), as /metrics does (Prometheus text). Not for the routes themselves.
"""

from __future__ import annotations

from typing import Any

_OPENAI_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["message", "type", "param", "code"],
    "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                   "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}}
_OLLAMA_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
_DIFY_ERROR = {"type": "object", "required": ["code", "message", "status"],
               "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "status": {"type": "integer"}}}
_ANTHROPIC_ERROR = {"type": "object", "required": ["type", "error"],
                    "properties": {"type": {"const": "error"}, "error": {
                        "type": "object", "required": ["type", "message"],
                        "properties": {"type": {"type": "string"}, "message": {"type": "string"}}}}}
_STREAMED = {"/api/generate": "application/x-ndjson", "/api/chat": "application/x-ndjson",
             "/api/create": "application/x-ndjson", "/v1/chat/completions": "text/event-stream",
             "/v1/completions": "text/event-stream", "/v1/workflows/run": "text/event-stream",
             "/v1/chat-messages": "text/event-stream", "/metrics": "text/plain"}


def _error_response(path: str, method: str) -> dict[str, Any]:
    from athanor.serve.dify_api import is_dify_route
    from athanor.serve.errors import is_dify_path, is_ollama_path

    dify = is_dify_path(path) or is_dify_route(path, method)  # GET /v1/messages is Dify's, POST is Anthropic's
    schema = _OLLAMA_ERROR if is_ollama_path(path) else _DIFY_ERROR if dify else _OPENAI_ERROR
    if path == "/v1/messages" and method == "POST":  # the Anthropic Messages API (anthropic_api.py)
        schema = _ANTHROPIC_ERROR
    return {"description": "bad request, not found, conflict, too large, wrong content type, ... (one line)",
            "content": {"application/json": {"schema": schema}}}


def install_openapi(app) -> None:
    """Replace app.openapi with one that documents the real error answers (built once, then cached)."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
            for path, item in doc.get("paths", {}).items():
                for method, operation in item.items():
                    _fix(path, operation, method.upper())
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi


def _fix(path: str, operation: dict, method: str) -> None:
    responses = operation.setdefault("responses", {})
    responses.pop("422", None)
    responses["4XX"] = _error_response(path, method)
    ok = responses.get("200") or responses.get("201")
    if ok is not None and path in _STREAMED:
        ok.setdefault("content", {}).setdefault(_STREAMED[path], {"schema": {}})
