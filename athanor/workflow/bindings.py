"""Bindings: what a Dify app's tools and knowledge bases are, here.

A Dify export names marketplace tools (`langgenius/tavily/tavily` + `tavily_search`) and dataset UUIDs that
do not exist on this machine. A small YAML/JSON file (`--bindings FILE`), or `--bind-tool` / `--bind-kb`
pairs on the command line, say what to use instead::

    tools:                                   # Dify "provider/tool", "short-provider/tool" or "tool" -> our tool
      tavily/tavily_search: web_search       #   a tool of an --mcp server
      langgenius/wikipedia/wikipedia/wikipedia_search: http_get
      math/eval_expression: calculator       #   a built-in
    knowledge:                               # Dify dataset id -> local knowledge base (athanor kb create NAME)
      6f1b0c2e-5c1a-4f0e-9d0a-1b2c3d4e5f60: handbook

Not for: resolving the names (workflow/tool_registry.py, Services.knowledge_base) or models (the model map).
"""

from __future__ import annotations

import json
from pathlib import Path

from athanor.errors import AthanorError


def read_bindings(path: str | Path) -> tuple[dict[str, str], dict[str, str]]:
    """A bindings file -> (tool bindings, knowledge-base bindings); a one-line AthanorError when malformed."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise AthanorError(f"bindings file {str(p)!r} not found")
    text = p.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AthanorError(f"bindings file {str(p)!r} does not parse: {first}") from None
    data = data or {}
    if not isinstance(data, dict) or set(data) - {"tools", "knowledge"}:
        raise AthanorError(f"bindings file {str(p)!r}: expected a mapping with 'tools' and/or 'knowledge'")
    return _section(data, "tools", p), _section(data, "knowledge", p)


def _section(data: dict, key: str, path: Path) -> dict[str, str]:
    section = data.get(key) or {}
    if not isinstance(section, dict):
        raise AthanorError(f"bindings file {str(path)!r}: '{key}' must be a mapping")
    bad = [str(k) for k, v in section.items() if not isinstance(v, str) or not v.strip()]
    if bad:
        raise AthanorError(f"bindings file {str(path)!r}: {key} {', '.join(bad)} must map to a name")
    return {str(k).strip(): v.strip() for k, v in section.items()}


def parse_pairs(pairs: list[str] | None, option: str) -> dict[str, str]:
    """["dify=ours", ...] -> {dify: ours}."""
    from athanor.keyvalue import parse_pairs as key_values

    try:
        out = key_values(pairs, option, value=str.strip)
    except ValueError as e:
        raise AthanorError(f"{e} (DIFY_NAME=LOCAL_NAME)") from None
    if not all(out.values()):
        raise AthanorError(f"{option}: each DIFY_NAME=LOCAL_NAME needs a local name")
    return out
