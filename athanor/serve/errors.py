"""HTTP errors for every API: one exception type, answered in the shape of the API the path belongs to.

OpenAI paths get `{"error": {"message", "type", "param", "code"}}`, Ollama paths (`/api/...`) get
`{"error": "..."}`, Dify's service API (`/v1/workflows...`, `/v1/chat-messages`) gets `{"code", "message",
"status"}`. Maps the project's own errors (AthanorError and kinds) and pydantic validation errors
to status codes. Not for deciding *what* is wrong (the routes and SamplingParams do that).
"""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from athanor.errors import AthanorError, CapacityError, ContextConflictError, ContextLengthError, ModelNotFoundError

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
          415: "invalid_request_error", 503: "service_unavailable", 500: "server_error"}


def openai_error_body(message: str, status: int, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": _TYPES.get(status, "invalid_request_error"), "param": param,
                      "code": code}}


class ServeError(Exception):
    """An HTTP error with a one-line message (status 400 unless told)."""

    def __init__(self, message: str, status: int = 400, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message, self.status, self.param, self.code = message, status, param, code
        self.headers = headers


def ollama_error_body(message: str) -> dict:
    return {"error": message}


def dify_error_body(message: str, status: int, code: str | None = None) -> dict:
    return {"code": code or _DIFY_CODES.get(status, "invalid_param"), "message": message, "status": status}


def is_ollama_path(path: str) -> bool:
    return path.startswith("/api/")


DIFY_PATHS = ("/v1/workflows", "/v1/chat-messages", "/v1/completion-messages", "/v1/conversations", "/v1/files/upload",
              "/v1/parameters", "/v1/info", "/v1/meta")  # Dify's service API: {"code", "message", "status"}
_DIFY_CODES = {400: "invalid_param", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "file_too_large", 415: "unsupported_media_type"}


def is_dify_path(path: str) -> bool:
    return path.startswith(DIFY_PATHS)


def error_body(path: str, message: str, status: int, param: str | None = None, code: str | None = None) -> dict:
    """The error body in the shape of the API that `path` belongs to."""
    if is_ollama_path(path):
        return ollama_error_body(message)
    if is_dify_path(path):
        return dify_error_body(message, status, code)
    return openai_error_body(message, status, param, code)


def error_response(path: str, message: str, status: int, param: str | None = None,
                   code: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(path, message, status, param, code), status_code=status, headers=headers)


def to_serve_error(e: Exception) -> ServeError:
    """A project error (or ValueError from input checks) -> ServeError with the right status."""
    if isinstance(e, ServeError):
        return e
    if isinstance(e, ModelNotFoundError):
        return ServeError(str(e), 404, "model", "model_not_found")
    if isinstance(e, CapacityError):
        headers = {"Retry-After": f"{e.retry_after:g}"} if e.retry_after is not None else None
        return ServeError(str(e), 503, code=e.code, headers=headers)
    if isinstance(e, ContextConflictError):
        return ServeError(str(e), 409, "num_ctx", "context_conflict", headers={"Retry-After": "1"})
    if isinstance(e, ContextLengthError):
        return ServeError(str(e), 400, "messages", "context_length_exceeded")
    if isinstance(e, (AthanorError, ValueError)):
        return ServeError(str(e), 400)
    raise e


def install_error_handlers(app) -> None:
    async def on_serve_error(request: Request, e: Exception) -> JSONResponse:
        err = to_serve_error(e)
        return error_response(request.url.path, err.message, err.status, err.param, err.code, err.headers)

    async def on_validation(request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        where = ".".join(loc)
        message = f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
        return error_response(request.url.path, message, 400, where or None)

    async def on_http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        """Starlette's own 404 (no such route) / 405 (wrong method), in the API's shape, not {"detail": ...}."""
        messages = {404: f"no route {request.url.path[:200]!r}",
                    405: f"method {request.method} is not allowed on {request.url.path[:200]!r}"}
        message = messages.get(e.status_code) or str(e.detail)
        return error_response(request.url.path, message, e.status_code, headers=getattr(e, "headers", None))

    async def on_unexpected(request: Request, e: Exception) -> JSONResponse:
        """A bug, not bad input: still one line in the API's shape (Starlette re-raises it, so the server logs
        the traceback)."""
        return error_response(request.url.path, f"internal error: {type(e).__name__}", 500, code="internal_error")

    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
    app.add_exception_handler(ServeError, on_serve_error)
    app.add_exception_handler(AthanorError, on_serve_error)
    app.add_exception_handler(RequestValidationError, on_validation)
