"""Local versions of Dify's keyless built-in tools, under Dify's own tool and parameter names.

    maths/eval_expression            expression                     -> athanor's AST calculator (no eval)
    json_process/json_parse          content, json_filter           -> the value(s) a JSONPath picks
    json_process/json_insert         content, query, new_value, index, create_path
    json_process/json_delete         content, query
    json_process/json_replace        content, query, replace_model (key|value), replace_value, replace_pattern
    webscraper/webscraper            url, user_agent                -> the page's text, for allowed hosts only
    time/current_time                format, timezone               (workflow/tool_registry.py)

JSONPath here is the subset Dify's examples use: `$`, `.key`, `['key']`, `[0]`, `[*]`, `.*`; a filter
expression (`[?(...)]`) or recursive descent (`..`) is refused with a one-line error, never guessed at.
The web scraper fetches with the run's http allow-list (127.0.0.1 / localhost and `--allow-host` hosts) and
returns the visible text (scripts and styles dropped); it follows no redirect to a host that is not allowed.
Not for: tools that need a key or a remote service (tavily, google, ...): bind those to an MCP server.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from typing import Any

from athanor.agent.tools import FunctionTool, ToolError

_STEP = re.compile(r"\.([A-Za-z_][\w-]*|\*)|\[\s*(\d+|\*|'[^']*'|\"[^\"]*\")\s*\]")


def _path(query: str) -> list:
    """'$.a.b[0]' -> ['a', 'b', 0] ('*' for a wildcard)."""
    q = (query or "$").strip()
    if not q.startswith("$"):
        q = "$." + q
    if ".." in q or "?(" in q:
        raise ToolError(f"JSONPath {query!r}: filters and recursive descent are not supported here")
    steps, pos = [], 1
    while pos < len(q):
        m = _STEP.match(q, pos)
        if not m:
            raise ToolError(f"JSONPath {query!r}: cannot read it at {q[pos:]!r}")
        token = m.group(1) if m.group(1) is not None else m.group(2)
        if token.isdigit():
            steps.append(int(token))
        elif token[:1] in "'\"":
            steps.append(token[1:-1])
        else:
            steps.append(token)
        pos = m.end()
    return steps


def _children(value: Any, step) -> list[tuple[Any, Any]]:
    """(container, key) pairs a step selects in value."""
    if step == "*":
        if isinstance(value, dict):
            return [(value, k) for k in value]
        return [(value, i) for i in range(len(value))] if isinstance(value, list) else []
    if isinstance(step, int) and isinstance(value, list) and -len(value) <= step < len(value):
        return [(value, step)]
    if isinstance(step, str) and isinstance(value, dict) and step in value:
        return [(value, step)]
    return []


def _select(doc: Any, steps: list) -> list[tuple[Any, Any]]:
    """(container, key) of every match; the root is (None, None)."""
    current = [(None, None)]
    for step in steps:
        current = [pair for c, k in current for pair in _children(doc if c is None else c[k], step)]
    return current


def _load(content: str) -> Any:
    try:
        return json.loads(content)
    except (json.JSONDecodeError, TypeError) as e:
        raise ToolError(f"content is not JSON: {e}") from None


def _dump(value: Any, ensure_ascii: bool = True) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=ensure_ascii)


def _json_parse(content: str, json_filter: str = "$", ensure_ascii: bool = True) -> str:
    doc = _load(content)
    found = [doc if c is None else c[k] for c, k in _select(doc, _path(json_filter))]
    if not found:
        return ""
    return _dump(found[0] if len(found) == 1 else found, ensure_ascii)


def _json_delete(content: str, query: str, ensure_ascii: bool = True) -> str:
    doc = _load(content)
    matches = [(c, k) for c, k in _select(doc, _path(query)) if c is not None]
    for container, key in sorted(matches, key=lambda m: m[1] if isinstance(m[1], int) else 0, reverse=True):
        del container[key]
    return _dump(doc, ensure_ascii)


def _parse_value(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _json_insert(content: str, query: str, new_value: Any, index: int | None = None, create_path: bool = False,
                 ensure_ascii: bool = True) -> str:
    doc, value, steps = _load(content), _parse_value(new_value), _path(query)
    targets = [doc if c is None else c[k] for c, k in _select(doc, steps)]
    if not targets and create_path and steps and isinstance(steps[-1], str) and steps[-1] != "*":
        parents = [doc if c is None else c[k] for c, k in _select(doc, steps[:-1])]
        for parent in parents:
            if isinstance(parent, dict):
                parent[steps[-1]] = value
        return _dump(doc, ensure_ascii)
    if not targets:
        raise ToolError(f"JSONPath {query!r} matches nothing")
    for target in targets:
        if isinstance(target, list):
            target.insert(len(target) if index is None else int(index), value)
        elif isinstance(target, dict) and isinstance(value, dict):
            target.update(value)
        else:
            raise ToolError(f"JSONPath {query!r}: can insert only into a list or an object")
    return _dump(doc, ensure_ascii)


def _json_replace(content: str, query: str, replace_value: Any, replace_model: str = "value",
                  replace_pattern: str = "", ensure_ascii: bool = True) -> str:
    doc, value = _load(content), _parse_value(replace_value)
    matches = [(c, k) for c, k in _select(doc, _path(query)) if c is not None]
    if not matches:
        raise ToolError(f"JSONPath {query!r} matches nothing")
    for container, key in matches:
        if replace_model == "key":
            if not isinstance(container, dict):
                raise ToolError("replace_model 'key' needs an object member")
            container[str(value)] = container.pop(key)
        elif replace_model == "pattern":
            container[key] = str(container[key]).replace(replace_pattern, str(value))
        else:
            container[key] = value
    return _dump(doc, ensure_ascii)


class _Text(HTMLParser):
    """Visible text of an HTML page."""

    def __init__(self):
        super().__init__()
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        self.skip += tag in ("script", "style", "noscript", "template")

    def handle_endtag(self, tag):
        self.skip -= tag in ("script", "style", "noscript", "template") and self.skip > 0

    def handle_data(self, data):
        if not self.skip and data.strip():
            self.parts.append(data.strip())


def page_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    return "\n".join(parser.parts)


def webscraper_tool(allowed_hosts: list[str], max_chars: int = 20_000) -> FunctionTool:
    from athanor.agent.files import http_get_tool

    fetch = http_get_tool(allowed_hosts, max_chars=max_chars * 5)

    def webscraper(url: str, user_agent: str = "") -> str:
        raw = fetch.call({"url": url})
        status, _, body = raw.partition("\n")
        if not status.startswith("HTTP 2"):
            raise ToolError(f"{url}: {status}")
        text = page_text(body) if "<" in body else body
        return text[:max_chars]

    params = {"type": "object", "properties": {"url": {"type": "string", "description": "page URL"},
                                               "user_agent": {"type": "string"}}, "required": ["url"]}
    return FunctionTool("webscraper", "Fetch a web page (allowed hosts only) and return its text: "
                        f"{', '.join(allowed_hosts)}.", params, webscraper)


def _expression(expression: str) -> str:
    from athanor.agent.calculator import calculator

    return calculator.call({"expression": expression})


_STR, _ANY = {"type": "string"}, {}
eval_expression = FunctionTool("eval_expression", "Evaluate a math expression, e.g. (2+3)*4.",
                               {"type": "object", "properties": {"expression": _STR}, "required": ["expression"]},
                               _expression)
json_parse = FunctionTool("json_parse", "Pick a value out of JSON text with a JSONPath filter.",
                          {"type": "object", "properties": {"content": _STR, "json_filter": _STR,
                                                            "ensure_ascii": {"type": "boolean"}},
                           "required": ["content"]}, _json_parse)
json_delete = FunctionTool("json_delete", "Delete what a JSONPath query matches from JSON text.",
                           {"type": "object", "properties": {"content": _STR, "query": _STR,
                                                             "ensure_ascii": {"type": "boolean"}},
                            "required": ["content", "query"]}, _json_delete)
json_insert = FunctionTool("json_insert", "Insert a value where a JSONPath query points in JSON text.",
                           {"type": "object", "properties": {"content": _STR, "query": _STR, "new_value": _ANY,
                                                             "index": {"type": "integer"},
                                                             "create_path": {"type": "boolean"},
                                                             "ensure_ascii": {"type": "boolean"}},
                            "required": ["content", "query", "new_value"]}, _json_insert)
json_replace = FunctionTool("json_replace", "Replace values (or keys) a JSONPath query matches in JSON text.",
                            {"type": "object", "properties": {"content": _STR, "query": _STR, "replace_value": _ANY,
                                                              "replace_model": {"type": "string",
                                                                                "enum": ["value", "key", "pattern"]},
                                                              "replace_pattern": _STR,
                                                              "ensure_ascii": {"type": "boolean"}},
                             "required": ["content", "query", "replace_value"]}, _json_replace)

STATIC = {t.name: t for t in (eval_expression, json_parse, json_delete, json_insert, json_replace)}
NAMES = (*STATIC, "webscraper")
