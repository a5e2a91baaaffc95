"""KEY=VALUE arguments, parsed in one place: `-o temperature=0`, `--filter ext=pdf`, `--input q=@file.txt`, and
training overrides `learning_rate=1e-4`.

`parse_pairs` splits each pair at its first `=` and turns the value into data with one of the converters below
(JSON, YAML or the plain string), so every command treats `a=b=c`, a missing `=` and an empty key alike.
Not for: what the keys mean (each command checks its own keys).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def split_pair(pair: str, what: str = "argument") -> tuple[str, str]:
    """'key=value' -> ('key', 'value'); no '=' or an empty key -> ValueError "<what> 'pair' is not KEY=VALUE"."""
    key, sep, value = pair.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"{what} {pair!r} is not KEY=VALUE")
    return key.strip(), value


def json_value(text: str) -> Any:
    """JSON when it parses ('3' -> 3, 'true' -> True, '["a"]' -> list), else the text itself ('END')."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def yaml_value(text: str) -> Any:
    """YAML's reading, as in a config file ('8' -> 8, 'true' -> True, '1e-4' -> 0.0001); empty -> None."""
    import yaml

    if not text.strip():
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def text_or_file(text: str) -> str:
    """The text, or the contents of PATH for '@PATH' when that file exists."""
    if text.startswith("@") and Path(text[1:]).is_file():
        return Path(text[1:]).read_text(encoding="utf-8")
    return text


def parse_pairs(pairs: Iterable[str] | None, what: str = "argument",
                value: Callable[[str], Any] = json_value) -> dict[str, Any]:
    """KEY=VALUE strings -> dict (later keys win); the first malformed pair -> ValueError."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, raw = split_pair(pair, what)
        out[key] = value(raw)
    return out
