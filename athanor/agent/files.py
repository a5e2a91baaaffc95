"""read_file / list_dir confined to one root directory, and http_get limited to an allow-list of hosts.

Confinement: every path is resolved (symlinks followed, `..` collapsed) and must stay inside the resolved
root, so `../../etc/passwd`, absolute paths elsewhere and symlinks pointing out are refused. After opening,
the file's (device, inode) is checked against the resolved path, which catches most swap-after-check
races; a process that can rewrite the tree under the root while we read is out of scope.
http_get: http(s) only, the host must be in the allow-list (exact, or a subdomain of an entry given as
".example.com"), redirects are followed by hand and each hop is checked again. Not protected: an allowed
name that resolves to an internal address (DNS rebinding) - allow only hosts you trust.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from athanor.agent.tools import FunctionTool, ToolError

MAX_READ_BYTES = 100_000
MAX_LIST_ENTRIES = 500


def confined_path(root: Path, relative: str) -> Path:
    """`relative` inside `root` (resolved), or ToolError."""
    root = root.resolve()
    if "\x00" in relative:
        raise ToolError("path contains a NUL byte")
    target = (root / relative.strip()).resolve()  # an absolute `relative` replaces root: refused below
    if target != root and root not in target.parents:
        raise ToolError(f"access denied: {relative!r} is outside the allowed directory")
    return target


def read_file_tool(root: str | Path, max_bytes: int = MAX_READ_BYTES) -> FunctionTool:
    root = Path(root)

    def read_file(path: str) -> str:
        target = confined_path(root, path)
        if not target.is_file():
            raise ToolError(f"no such file: {path!r}")
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            st, now = os.fstat(f.fileno()), target.stat()
            if (st.st_dev, st.st_ino) != (now.st_dev, now.st_ino):
                raise ToolError(f"access denied: {path!r} changed while opening")
            data = f.read(max_bytes + 1)
        text = data[:max_bytes].decode("utf-8", errors="replace")
        return text + ("\n... (truncated)" if len(data) > max_bytes else "")

    params = {"type": "object", "properties": {"path": {"type": "string", "description": "relative to the root"}},
              "required": ["path"]}
    return FunctionTool("read_file", "Read a text file (path relative to the allowed directory).", params, read_file)


def list_dir_tool(root: str | Path) -> FunctionTool:
    root = Path(root)

    def list_dir(path: str = ".") -> str:
        target = confined_path(root, path or ".")
        if not target.is_dir():
            raise ToolError(f"not a directory: {path!r}")
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in target.iterdir())
        more = f"\n... ({len(names) - MAX_LIST_ENTRIES} more)" if len(names) > MAX_LIST_ENTRIES else ""
        return "\n".join(names[:MAX_LIST_ENTRIES]) + more if names else "(empty)"

    params = {"type": "object", "properties": {"path": {"type": "string", "default": "."}}, "required": []}
    return FunctionTool("list_dir", "List a directory (path relative to the allowed directory).", params, list_dir)


def host_allowed(host: str, allowed: list[str]) -> bool:
    host = host.lower().rstrip(".")
    for entry in (a.lower() for a in allowed):
        if host == entry.lstrip(".") or (entry.startswith(".") and host.endswith(entry)):
            return True
    return False


def http_get_tool(allowed_hosts: list[str], timeout_s: float = 10.0, max_chars: int = 20_000,
                  max_redirects: int = 5) -> FunctionTool:
    def http_get(url: str) -> str:
        import httpx

        with httpx.Client(timeout=timeout_s, follow_redirects=False) as client:
            for _ in range(max_redirects + 1):
                _check_url(url, allowed_hosts)
                r = client.get(url)
                if r.is_redirect and "location" in r.headers:
                    url = urljoin(url, r.headers["location"])
                    continue
                text = r.text
                return f"HTTP {r.status_code}\n" + text[:max_chars] + ("\n... (truncated)" if len(text) > max_chars else "")
        raise ToolError(f"more than {max_redirects} redirects")

    desc = f"HTTP GET a URL and return the body. Allowed hosts: {', '.join(allowed_hosts) or 'none'}."
    params = {"type": "object", "properties": {"url": {"type": "string"}}, "required": ["url"]}
    return FunctionTool("http_get", desc, params, http_get)


def _check_url(url: str, allowed: list[str]) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ToolError(f"only http(s) URLs are allowed, got {url!r}")
    if parts.username or parts.password:
        raise ToolError("URLs with credentials are not allowed")
    if not parts.hostname or not host_allowed(parts.hostname, allowed):
        raise ToolError(f"host {parts.hostname!r} is not allowed; allowed: {', '.join(allowed) or 'none'}")
