"""Nodes that reach outside the pool: code (python3 in the agent's sandbox), http-request (allow-listed hosts
only) and document-extractor (uploads, allow-listed URLs, CLI-only local paths: workflow/files.py; athanor.rag.loaders).

code: the node's `main(**inputs)` runs in `athanor.agent.sandbox.run_python`: the OS sandbox (own unprivileged
process, namespaces, read-only stdlib-only root, no network, seccomp, rlimits; docs/security.md), or refused.
Its dict result is checked against the declared `outputs` types; a wrong or missing output is a node error.
Not for: model calls (model.py).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlparse

from athanor.workflow.errors import WorkflowNodeError
from athanor.workflow.nodes.base import Node, NodeResult, RunContext, register

_MARKER = "__athanor_code_result_"
_MAX_OUTPUT = 1_000_000  # bytes a code node may print, its result included

# ------------------------------------------------------------------------------------------------- code

_TYPE_CHECKS = {"string": lambda v: isinstance(v, str),
                "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
                "boolean": lambda v: isinstance(v, bool),
                "object": lambda v: isinstance(v, dict),
                "any": lambda v: True}


def check_output_type(name: str, kind: str, value: Any) -> None:
    """Raise WorkflowNodeError when `value` is not of Dify output type `kind` (None is allowed, as in Dify)."""
    if value is None:
        return
    kind = str(kind or "any")
    if kind.startswith("array"):
        inner = kind[len("array["):-1] if kind.startswith("array[") else "any"
        if not isinstance(value, list):
            raise WorkflowNodeError(f"output {name!r} must be {kind}, got {type(value).__name__}")
        for i, item in enumerate(value):
            if item is not None and not _TYPE_CHECKS.get(inner, _TYPE_CHECKS["any"])(item):
                raise WorkflowNodeError(f"output {name!r}[{i}] must be {inner}, got {type(item).__name__}")
        return
    if not _TYPE_CHECKS.get(kind, _TYPE_CHECKS["any"])(value):
        raise WorkflowNodeError(f"output {name!r} must be {kind}, got {type(value).__name__}")


def _script(code: str, inputs: dict, marker: str) -> str:
    # json.dumps of a JSON text is a valid Python string literal
    return (f"{code}\n\nimport json as _athanor_json, sys as _athanor_sys\n"
            f"_athanor_result = main(**_athanor_json.loads({json.dumps(json.dumps(inputs, default=str))}))\n"
            f"if not isinstance(_athanor_result, dict):\n"
            f"    raise TypeError('main() must return a dict, got ' + type(_athanor_result).__name__)\n"
            f"_athanor_sys.stdout.write('\\n{marker}' + _athanor_json.dumps(_athanor_result, default=str))\n")


@register
class CodeNode(Node):
    type = "code"

    def check(self, app) -> list[str]:
        lang = self.data.get("code_language", "python3")
        if lang != "python3":
            return [f"code_language {lang!r} is not supported (only python3 runs here)"]
        if "def main" not in str(self.data.get("code", "")):
            return ["the code defines no main() function"]
        return []

    def run(self, ctx: RunContext) -> NodeResult:
        lang = self.data.get("code_language", "python3")
        if lang != "python3":
            raise WorkflowNodeError(f"code_language {lang!r} is not supported: only python3 code nodes run here")
        from athanor.agent.sandbox import CodeExecutionRefused, run_python

        inputs = {v.get("variable"): ctx.pool.lookup(v.get("value_selector") or [])
                  for v in self.data.get("variables") or [] if v.get("variable")}
        marker = f"{_MARKER}{uuid.uuid4().hex}:"
        services = ctx.services
        try:
            res = run_python(_script(str(self.data.get("code", "")), inputs, marker),
                             timeout_s=services.code_timeout_s, memory_mb=services.code_memory_mb,
                             max_output_bytes=_MAX_OUTPUT, unsafe=services.unsafe_code)
        except CodeExecutionRefused as e:
            raise WorkflowNodeError(str(e)) from None
        if res.timed_out:
            raise WorkflowNodeError(f"code ran longer than {services.code_timeout_s:g} s and was stopped")
        if res.stdout_bytes > _MAX_OUTPUT:
            raise WorkflowNodeError(f"code printed {res.stdout_bytes:,} bytes; a code node may print at most "
                                    f"{_MAX_OUTPUT:,}" + (f" ({res.stopped})" if res.stopped else ""))
        if res.returncode != 0 or marker not in res.stdout:
            lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
            why = res.stopped or (lines[-1] if lines else f"exit status {res.returncode}")
            raise WorkflowNodeError(f"code failed: {why}")
        result = json.loads(res.stdout.rsplit(marker, 1)[1])
        return NodeResult(outputs=self._typed(result), inputs=inputs)

    def _typed(self, result: dict) -> dict:
        declared = self.data.get("outputs") or {}
        if not declared:
            return result
        out = {}
        for name, spec in declared.items():
            if name not in result:
                raise WorkflowNodeError(f"output {name!r} is missing from main()'s result")
            check_output_type(name, (spec or {}).get("type", "any"), result[name])
            out[name] = result[name]
        return out


# ------------------------------------------------------------------------------------------------- http


def _pairs(text: Any, ctx: RunContext) -> dict[str, str]:
    """Dify's "key:value" lines (or a list of {key, value}) -> dict, templates rendered."""
    out: dict[str, str] = {}
    if isinstance(text, list):
        for item in text:
            if isinstance(item, dict) and item.get("key"):
                out[ctx.render(str(item["key"]))] = ctx.render(str(item.get("value", "")))
        return out
    for line in str(text or "").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            out[ctx.render(key.strip())] = ctx.render(value.strip())
    return out


@register
class HttpRequestNode(Node):
    type = "http-request"
    METHODS: ClassVar[set[str]] = {"get", "post", "put", "patch", "delete", "head", "options"}

    def check(self, app) -> list[str]:
        problems = []
        if str(self.data.get("method", "get")).lower() not in self.METHODS:
            problems.append(f"unknown method {self.data.get('method')!r}")
        if not self.data.get("url"):
            problems.append("no url")
        return problems

    def run(self, ctx: RunContext) -> NodeResult:
        import httpx

        url = ctx.render(str(self.data.get("url", ""))).strip()
        host = urlparse(url).hostname
        if urlparse(url).scheme not in ("http", "https") or not host:
            raise WorkflowNodeError(f"http request: {url!r} is not an http(s) URL")
        allowed = ctx.services.http_allow_hosts
        if host not in allowed:
            raise WorkflowNodeError(f"http request to host {host!r} is not allowed (allowed: "
                                    f"{', '.join(sorted(allowed))})")
        method = str(self.data.get("method", "get")).upper()
        headers = {**_pairs(self.data.get("headers"), ctx), **self._auth(ctx)}
        params = _pairs(self.data.get("params"), ctx)
        body_args = self._body(ctx, headers)
        timeout = self._timeout()
        try:
            with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
                resp = client.request(method, url, headers=headers, params=params, **body_args)
        except httpx.HTTPError as e:
            raise WorkflowNodeError(f"http request to {url} failed: {type(e).__name__}: {e}") from None
        outputs = {"status_code": resp.status_code, "body": resp.text, "headers": dict(resp.headers), "files": []}
        return NodeResult(outputs=outputs, inputs={"url": url, "method": method},
                          process_data={"request": f"{method} {url}", "params": params})

    def _auth(self, ctx: RunContext) -> dict:
        auth = self.data.get("authorization") or {}
        if auth.get("type") != "api-key":
            return {}
        config = auth.get("config") or {}
        key, kind = ctx.render(str(config.get("api_key", ""))), config.get("type", "bearer")
        if kind == "bearer":
            return {"Authorization": f"Bearer {key}"}
        if kind == "basic":
            return {"Authorization": f"Basic {key}"}
        return {str(config.get("header") or "Authorization"): key}

    def _body(self, ctx: RunContext, headers: dict) -> dict:
        body = self.data.get("body") or {}
        kind, data = body.get("type", "none"), body.get("data")
        if kind in ("none", None):
            return {}
        if kind in ("x-www-form-urlencoded", "form-data"):
            fields = _pairs(data, ctx)
            return {"data": fields} if kind == "x-www-form-urlencoded" else {"files": {k: (None, v) for k, v in fields.items()}}
        if isinstance(data, list):  # newer exports: [{type: text, value: "..."}]
            data = "".join(str(item.get("value", "")) for item in data if isinstance(item, dict))
        text = ctx.render(str(data or ""))
        if kind == "json":
            headers.setdefault("Content-Type", "application/json")
        elif kind == "raw-text":
            headers.setdefault("Content-Type", "text/plain")
        elif kind == "binary":
            raise WorkflowNodeError("http request: binary (file) bodies are not supported")
        return {"content": text.encode("utf-8")}

    def _timeout(self):
        import httpx

        t = self.data.get("timeout") or {}
        def pick(*keys, default=30.0):
            for k in keys:
                if t.get(k):
                    return float(t[k])
            return default
        return httpx.Timeout(connect=pick("connect", "max_connect_timeout", default=10.0),
                             read=pick("read", "max_read_timeout"), write=pick("write", "max_write_timeout"), pool=5.0)


# ------------------------------------------------------------------------------------------------- files


_PLAIN = {".txt", ".md", ".markdown", ".text", ".log"}


@register
class DocumentExtractorNode(Node):
    type = "document-extractor"

    def run(self, ctx: RunContext) -> NodeResult:
        value = ctx.pool.get(self.data.get("variable_selector") or [])
        many = isinstance(value, list)
        texts = [self._text(item, ctx) for item in (value if many else [value])]
        return NodeResult(outputs={"text": texts if many else texts[0]})

    @staticmethod
    def _text(item: Any, ctx: RunContext) -> str:
        from athanor.rag.loaders import LoadError, load_bytes
        from athanor.workflow.files import local_copy

        with local_copy(item, ctx.services) as (path, name):
            data = path.read_bytes()
        if Path(name).suffix.lower() in _PLAIN:  # as written: headings and markup are part of the text
            return data.decode("utf-8", errors="replace")
        try:
            doc = load_bytes(name, data, 0.0)
        except LoadError as e:
            raise WorkflowNodeError(f"document extractor: {e}") from None
        return "\n\n".join(b.text for b in doc.blocks)
