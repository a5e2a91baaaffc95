"""Browser and size guards in front of every route: Host allow-list, CORS origins, JSON content type, body cap.

A page the user visits must not be able to drive a server on 127.0.0.1 (CSRF "simple requests", DNS
rebinding). So, as Ollama (allowedHostsMiddleware, OLLAMA_ORIGINS) and Jupyter (allow_remote_access) do:
- `Host` must be an IP literal that is loopback or the bind address (any IP when bound to 0.0.0.0 / ::),
  `localhost` or `*.localhost`, this machine's host name, or in the allow-list (`--allowed-hosts`,
  ATHANOR_ALLOWED_HOSTS; `*` turns the check off; `.example.com` allows the domain and its subdomains): else 403.
  A rebinding page's requests carry the attacker's name in `Host`, so they stop here.
- A request with an `Origin` header must come from an allowed origin (Ollama's defaults: localhost, 127.0.0.1,
  0.0.0.0 on any port, app/file/tauri/vscode schemes; plus `--origins` / ATHANOR_ORIGINS, `*` wildcards) or
  from the server's own origin: else 403. Allowed origins get CORS headers; preflights are answered here.
- A request with a body must say `Content-Type: application/json` (or `+json`): 415 otherwise, so text/plain
  and form bodies (what a page can send without a preflight) are never read as JSON. Ollama's blob uploads
  (`POST /api/blobs/sha256:...`, raw bytes kept only when they hash to the digest) are the one exception.
- A body larger than `max_body_bytes` is refused with 413 before it is read whole.
Not for authentication (middleware.py) or per-route validation.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import re
import socket

from athanor.serve.errors import error_response

ALLOWED_HOSTS_ENV = "ATHANOR_ALLOWED_HOSTS"
ORIGINS_ENV = "ATHANOR_ORIGINS"
DEFAULT_MAX_BODY_BYTES = 32 * 2**20
# Ollama's defaults (envconfig.AllowedOrigins): these hosts on http/https with any port, and app schemes
_DEFAULT_ORIGIN_HOSTS = ("localhost", "127.0.0.1", "0.0.0.0", "[::1]")
_DEFAULT_ORIGIN_SCHEMES = ("app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*")
_BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")
_CORS_METHODS = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"
_CORS_HEADERS = "Authorization, Content-Type, User-Agent, Accept, X-Requested-With, X-Request-Id, OpenAI-Beta, " \
                "X-Stainless-Lang, X-Stainless-Package-Version, X-Stainless-OS, X-Stainless-Arch, " \
                "X-Stainless-Runtime, X-Stainless-Runtime-Version, X-Stainless-Async, X-Stainless-Retry-Count, " \
                "X-Stainless-Timeout"


def split_list(value: str | None) -> list[str]:
    """A comma-separated setting (quotes around the whole value are dropped, as Ollama does) -> items."""
    return [v.strip() for v in (value or "").strip("\"'").split(",") if v.strip()]


def default_origins(extra: list[str] | None = None) -> list[str]:
    origins = list(extra or []) + split_list(os.environ.get(ORIGINS_ENV))
    for host in _DEFAULT_ORIGIN_HOSTS:
        origins += [f"http://{host}", f"https://{host}", f"http://{host}:*", f"https://{host}:*"]
    return origins + list(_DEFAULT_ORIGIN_SCHEMES)


def _split_host(host_header: str) -> str:
    """`Host` header -> host name or IP without port and brackets, lower case."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


class HostPolicy:
    def __init__(self, bind_host: str = "127.0.0.1", allowed: list[str] | None = None) -> None:
        self.allowed = [a.lower() for a in (allowed or []) + split_list(os.environ.get(ALLOWED_HOSTS_ENV))]
        self.bind = _split_host(bind_host)
        self.hostname = socket.gethostname().lower()

    def allows(self, host_header: str) -> bool:
        host = _split_host(host_header)
        if "*" in self.allowed or host in ("localhost", self.bind, self.hostname) or host.endswith(".localhost"):
            return True
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return any(host == a or (a.startswith(".") and (host.endswith(a) or host == a[1:])) for a in self.allowed)
        bind_any = self.bind in ("0.0.0.0", "::", "")
        return ip.is_loopback or bind_any or host in self.allowed


BLOB_PREFIX = "/api/blobs/"  # Ollama's blob uploads: raw bytes (no content type), size-capped like the rest
MULTIPART_PATHS = ("/v1/files/upload",)  # the only routes whose body is multipart/form-data (size-checked there)


class GuardMiddleware:
    """Pure ASGI, outermost: refuses before auth, routing or body parsing; adds CORS headers to answers."""

    def __init__(self, app, bind_host: str = "127.0.0.1", allowed_hosts: list[str] | None = None,
                 origins: list[str] | None = None, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app, self.hosts, self.max_body_bytes = app, HostPolicy(bind_host, allowed_hosts), max_body_bytes
        self.origins = default_origins(origins)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path, origin = scope["path"], headers.get("origin")
        refusal = self._refusal(scope, headers)
        if refusal:
            return await error_response(path, refusal[1], refusal[0])(scope, receive, send)
        if scope["method"] == "OPTIONS" and origin and "access-control-request-method" in headers:
            return await _preflight(origin)(scope, receive, send)
        if scope["method"] in _BODY_METHODS and _has_body(headers) and scope["path"] not in MULTIPART_PATHS:
            receive, body = await _buffer_body(receive, self.max_body_bytes)
            if body is None:
                message = f"request body is larger than the server's limit of {self.max_body_bytes} bytes"
                return await error_response(path, message, 413)(scope, receive, send)
            if not path.startswith(BLOB_PREFIX) and has_lone_surrogate(body):  # valid JSON, but no tokenizer, file name or encoder can take it
                message = "request body has a lone UTF-16 surrogate escape (\\ud800-\\udfff not in a pair)"
                return await error_response(path, message, 400)(scope, receive, send)
        await self.app(scope, receive, _with_cors(send, origin) if origin else send)

    def _refusal(self, scope, headers: dict) -> tuple[int, str] | None:
        host = headers.get("host", "")
        if not self.hosts.allows(host):
            return 403, (f"host {host[:100]!r} is not allowed (DNS rebinding guard); add it with --allowed-hosts "
                         f"or {ALLOWED_HOSTS_ENV}")
        origin = headers.get("origin")
        if origin and not self._origin_allowed(origin, host, scope.get("scheme", "http")):
            return 403, f"origin {origin[:100]!r} is not allowed; add it with --origins or {ORIGINS_ENV}"
        if scope["method"] in _BODY_METHODS and _has_body(headers):
            length = headers.get("content-length", "")
            if length.isdigit() and int(length) > self.max_body_bytes:
                return 413, f"request body is larger than the server's limit of {self.max_body_bytes} bytes"
            content_type = headers.get("content-type", "")
            if scope["path"] in MULTIPART_PATHS and content_type.startswith("multipart/form-data"):
                return None  # uploads (Dify's /v1/files/upload): multipart by design, authenticated like the rest
            if scope["path"].startswith(BLOB_PREFIX) and scope["method"] == "POST":
                return None  # Ollama's blob upload: raw bytes, checked against their digest (ollama_blobs.py)
            if not _is_json(content_type):
                return 415, "request body must be JSON with 'Content-Type: application/json'"
        return None

    def _origin_allowed(self, origin: str, host: str, scheme: str) -> bool:
        o = origin.strip().lower()
        if o == f"{scheme}://{host.lower()}":
            return True  # same origin (the /ui console as served)
        return any(o == p.lower() or ("*" in p and fnmatch.fnmatchcase(o, p.lower())) for p in self.origins)


def _has_body(headers: dict) -> bool:
    return headers.get("content-length", "0") not in ("", "0") or "transfer-encoding" in headers


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def _buffer_body(receive, limit: int):
    """Read the whole body (at most `limit` bytes); -> (a receive that replays it then goes on, the body or
    None when it is over the limit)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            chunks.append(message)  # a disconnect: hand it on
            break
        size += len(message.get("body", b""))
        if size > limit:
            return receive, None
        chunks.append(message)
        if not message.get("more_body"):
            break

    async def replay():
        return chunks.pop(0) if chunks else await receive()

    return replay, b"".join(c.get("body", b"") for c in chunks if c["type"] == "http.request")


# \uD800-\uDBFF must be followed by \uDC00-\uDFFF; an escape counts only after an even run of backslashes
_SURROGATE = re.compile(rb"(?<!\\)(?:\\\\)*\\u(?:([dD][89abAB][0-9a-fA-F]{2})(\\u[dD][c-fC-F][0-9a-fA-F]{2})?"
                        rb"|[dD][c-fC-F][0-9a-fA-F]{2})")


def has_lone_surrogate(body: bytes) -> bool:
    """A JSON text with an unpaired surrogate escape (json.loads turns it into a str that cannot be encoded)."""
    if b"\\u" not in body:
        return False
    return any(m.group(1) is None or m.group(2) is None for m in _SURROGATE.finditer(body))


def _preflight(origin: str):
    from starlette.responses import Response

    return Response(status_code=204, headers=_cors_headers(origin) | {
        "Access-Control-Allow-Methods": _CORS_METHODS, "Access-Control-Allow-Headers": _CORS_HEADERS,
        "Access-Control-Max-Age": "43200"})


def _cors_headers(origin: str) -> dict[str, str]:
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}


def _with_cors(send, origin: str):
    async def send_cors(message) -> None:
        if message["type"] == "http.response.start":
            extra = [(k.lower().encode(), v.encode("latin-1")) for k, v in _cors_headers(origin).items()]
            message["headers"] = list(message.get("headers", [])) + extra
        await send(message)

    return send_cors
