"""One pure-ASGI middleware for every request: request id, bearer auth, access log line, request counter.

Pure ASGI (not BaseHTTPMiddleware) so streamed bodies pass through untouched and a client that goes away
still reaches the route's stream (which aborts the engine request). Not for per-route logic.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
import uuid

from athanor import tracing
from athanor.runtime.request_id import enter_request, leave_request
from athanor.serve.errors import error_response

access_log = logging.getLogger("athanor.serve.access")
PUBLIC_PATHS = ("/health", "/health/live", "/health/ready")  # answered without a key: probes have none


def public(path: str) -> bool:
    """Probes, and the console's pages and static files (/ui): they hold no data; /ui/api/ (data) needs the key."""
    if path in PUBLIC_PATHS or path == "/ui":
        return True
    return path.startswith("/ui/") and not path.startswith("/ui/api/")
# POSTs that run models, agents, workflows or retrieval: each is one trace (root span "POST <path>")
TRACED_PREFIXES = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/messages", "/v1/responses",
                   "/api/chat", "/api/generate", "/api/embed", "/v1/workflows/run", "/v1/chat-messages",
                   "/v1/completion-messages", "/v1/agent", "/v1/knowledge", "/v1/retrieval", "/v1/datasets")


def traced(method: str, path: str) -> bool:
    return method == "POST" and path.startswith(TRACED_PREFIXES)


def _tracing_on(scope) -> bool:
    """This app traces (its lifespan started tracing: app.state.tracing) and a tracer is installed. Checked per app,
    not only per process: a second app in the same process started with --no-trace records nothing."""
    state = getattr(scope.get("app"), "state", None)
    return getattr(state, "tracing", None) is not None and tracing.installed() is not None


class RequestMiddleware:
    def __init__(self, app, api_key: str | None, metrics, key_check=None) -> None:
        self.app, self.api_key, self.metrics = app, api_key, metrics
        self.key_check = key_check  # (path, method, token) -> True for other keys a route accepts (Dify app keys)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = headers.get("x-request-id") or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = {"code": 500}
        root = None
        if _tracing_on(scope) and traced(scope["method"], scope["path"]):
            root = tracing.start_span(f"{scope['method']} {scope['path']}", "http",
                                      tracing.parse_traceparent(headers.get("traceparent")), **{
                                          tracing.REQUEST_ID: request_id, "http.request.method": scope["method"],
                                          "url.path": scope["path"]})
            scope["state"]["trace_id"] = root.trace_id
        extra = [(b"x-request-id", request_id.encode())]
        if root is not None:
            extra.append((b"x-trace-id", root.trace_id.encode()))

        def end_root() -> None:
            if root is None or root.end_time is not None:
                return
            root.set("http.response.status_code", status["code"])
            if status["code"] >= 400 and root.status == "ok":
                root.fail(f"HTTP {status['code']}")
            root.end()

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message["headers"] = list(message.get("headers", [])) + extra
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                end_root()  # before the last byte: a client that reads its trace right after finds it whole
            await send(message)

        scope_token = enter_request(request_id)  # engine requests made for it carry this id (runtime/request_id.py)
        span_token = tracing.enter_span(root) if root is not None else None
        try:
            if not self._authorized(scope["path"], headers, scope["method"]):
                response = error_response(scope["path"], "missing or invalid API key (Authorization: Bearer KEY)",
                                          401, headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            if root is not None:
                tracing.leave_span(span_token)
                end_root()
            leave_request(scope_token)
            self._record(scope, status["code"], request_id, time.perf_counter() - t0)

    def _authorized(self, path: str, headers: dict, method: str = "GET") -> bool:
        if not self.api_key or public(path):
            return True
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        if hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
            return True
        return bool(self.key_check and self.key_check(path, method, token.strip()))

    def _record(self, scope, status: int, request_id: str, seconds: float) -> None:
        route = scope.get("route")
        route_path = getattr(route, "path", None) or "unmatched"  # templates, never raw paths: bounded labels
        self.metrics.count_request(scope["method"], route_path, status)
        access_log.info(json.dumps({"request_id": request_id, "method": scope["method"], "path": scope["path"],
                                    "status": status, "ms": round(seconds * 1000, 1),
                                    "client": (scope.get("client") or ("", 0))[0]}))

